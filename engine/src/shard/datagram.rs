//! Datagrams: receiving into plugins, send completions and the kernel's
//! receive-queue drop counter.

use super::*;

impl<B: Backend> Shard<B> {
    pub(super) fn on_udp_recv(&mut self, idx: u32, result: RecvResult, more: bool) {
        let Some(sock) = self.core.udp.get_mut(idx as usize) else {
            if let RecvResult::Data { buf, .. } = result {
                self.bufs.recycle_udp(buf);
            }
            return;
        };
        if !more {
            sock.armed = false;
        }
        let cancelled = result == RecvResult::Cancelled;
        match result {
            RecvResult::Data { buf, len } => {
                self.datagram(idx, buf, len as usize);
                self.bufs.recycle_udp(buf);
            }
            RecvResult::NoBuffers => {
                self.core.counters.buffer_ring_empty.add(1);
                self.bufs.udp_ran_dry();
            }
            _ => {}
        }
        // Not once the drain has closed the socket: a receive on the closed
        // descriptor fails at once, and re-arming it would spin the shard.
        let stopping = self.core.stopping || self.guard.draining();
        if !more && !stopping && !cancelled {
            self.core.arm_udp(idx);
        }
    }

    pub(super) fn datagram(&mut self, idx: u32, bid: u16, len: usize) {
        self.core.udp_arrivals += 1;
        let sock = &mut self.core.udp[idx as usize];
        let Some(msg) = self.bufs.datagram(bid, len) else {
            self.core.counters.drop_engine(EngineDrop::BadSource, 1);
            return;
        };
        // With `UdpDropCounter::Cmsg` every datagram carries the counter.
        let cmsg = self.core.config.udp_drop_counter == UdpDropCounter::Cmsg;
        if let Some(v) = cmsg.then(|| udp::rxq_ovfl(msg.control)).flatten() {
            let delta = sock.kernel_drops_since_last(v);
            if delta > 0 {
                self.core
                    .counters
                    .drop_engine(EngineDrop::KernelRxQueue, delta);
            }
        }
        if msg.truncated {
            self.core
                .counters
                .drop_engine(EngineDrop::DatagramTruncated, 1);
            self.guard
                .dropped(sock.listener.0, ListenerDrop::DatagramTruncated);
            return;
        }
        let Some(peer) = addr::from_raw(msg.name) else {
            self.core.counters.drop_engine(EngineDrop::BadSource, 1);
            return;
        };
        let payload = msg.payload;
        // The allowlist before any plugin code.
        if !self.guard.datagram(
            sock.listener.0,
            peer,
            sock.local.port(),
            payload.len(),
            &self.core.clock,
        ) {
            return;
        }
        let info = DatagramInfo {
            socket: SocketId(idx),
            listener: sock.listener,
            peer,
            local: sock.local,
        };
        let plugin = sock.plugin;
        self.core.counters.datagrams_in.add(1);
        self.core.counters.bytes_in.add(payload.len() as u64);
        self.core.current_plugin = plugin;
        let slots_full = EngineDrop::UdpSendSlotsFull as usize;
        let before = self.core.counters.engine_drops[slots_full].get();
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        match super::guarded(|| p.handle_datagram(core, &info, payload)) {
            Some(Ok(())) => {}
            Some(Err(r)) => {
                // A reply refused for want of a send slot is already counted
                // as `udp_send_slots_full`; the plugin passing that refusal on
                // is the same drop, not a second one.
                let engine_counted = self.core.counters.engine_drops[slots_full].get() > before;
                if !(r == DropReason::QueueFull && engine_counted) {
                    self.core.counters.drop_plugin(r);
                }
            }
            None => self.plugin_panicked("handle_datagram", info.listener.0, info.peer),
        }
    }

    /// A datagram send completed; `listener` is the one whose socket sent it.
    pub(super) fn on_udp_send(&mut self, slot: u32, listener: u32, res: i32) {
        self.core.sends.release(slot);
        if res >= 0 {
            self.core.counters.datagrams_out.add(1);
            self.core.counters.bytes_out.add(res as u64);
            self.guard.datagram_sent(listener as u16, res as usize);
        } else {
            self.core.counters.drop_engine(EngineDrop::UdpSendError, 1);
        }
    }

    /// Reads the kernel's receive-queue drop counter (`sk_drops`) of every UDP
    /// socket with SO_MEMINFO, at most every [`DROPS_POLL_EVERY`] while
    /// datagrams flow, once more after they stop, and never while idle.
    pub(super) fn poll_kernel_drops(&mut self, force: bool) {
        if self.core.config.udp_drop_counter != UdpDropCounter::Poll || self.core.udp.is_empty() {
            return;
        }
        let seen = self.core.udp_arrivals;
        if !force {
            match self.core.drops_poll_at {
                None if seen != self.core.drops_polled_at_count => {
                    self.core.drops_poll_at = Some(self.core.clock.now() + DROPS_POLL_EVERY);
                    return;
                }
                // While the deadline timer covers `at`, its completion says
                // when to look; reading the clock every turn would cost more
                // than the poll.
                Some(at) if self.core.io.timer_armed_by(at) => return,
                Some(at) if self.core.clock.now() >= at => {}
                _ => return,
            }
        }
        self.core.drops_poll_at = None;
        self.core.drops_polled_at_count = seen;
        for sock in &mut self.core.udp {
            if let Some(v) = socket::sk_drops(sock.raw_fd()) {
                let delta = sock.kernel_drops_since_last(v);
                if delta > 0 {
                    self.core
                        .counters
                        .drop_engine(EngineDrop::KernelRxQueue, delta);
                }
            }
        }
    }
}
