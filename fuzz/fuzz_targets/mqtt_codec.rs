//! Arbitrary bytes as MQTT packets, before a CONNECT and on 3.1.1 and 5.0
//! connections: the fixed-header model and the round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::mqtt_codec::mqtt_codec(data);
});
