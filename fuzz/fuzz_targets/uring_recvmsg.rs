//! Provided buffers through the multishot recvmsg layout parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::recvmsg::uring_recvmsg(data);
});
