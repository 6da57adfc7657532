//! The shard core: its requests to the backend (arming accepts and
//! receives, sends, closes, wake-ups) and the [`Context`] plugins see.

use std::os::fd::{AsRawFd, IntoRawFd};

use super::*;

impl<B: Backend> Core<B> {
    /// Notes that we queued for `to` this turn.
    pub(super) fn note_target(&mut self, to: ShardId) {
        if !self.sent_to[to] {
            self.sent_to[to] = true;
            self.targets.push(to);
        }
    }

    /// Wakes the parked shards among those we queued for this turn (the
    /// backend picks how: MSG_RING into their ring, or an eventfd write).
    pub(super) fn send_wakes(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let wake_list = &mut self.wake_list;
        self.outbox
            .wakes_due(&self.targets, |to| wake_list.push(to));
        for &t in &self.targets {
            self.sent_to[t] = false;
        }
        self.targets.clear();
        while let Some(to) = self.wake_list.pop() {
            self.counters.mesh_wakes.add(1);
            self.io.wake_peer(to, &self.peers[to]);
        }
    }

    pub(super) fn send_envelope(&mut self, to: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        if to >= self.shard_count {
            return Err(MeshError::NoSuchShard(msg));
        }
        let env = Envelope {
            plugin: self.current_plugin,
            sent: self.clock.now(),
            msg,
        };
        match self.outbox.try_send(to, env) {
            Ok(()) => {
                self.counters.mesh_out.add(1);
                self.note_target(to);
                Ok(())
            }
            Err(env) => {
                self.counters.mesh_full.add(1);
                Err(MeshError::Full(env.msg))
            }
        }
    }

    pub(super) fn arm_accept(&mut self, idx: u32) {
        let l = &self.listeners[idx as usize];
        if let Some(fd) = &l.fd {
            self.io.arm_accept(idx, fd.as_raw_fd());
        }
    }

    pub(super) fn arm_recv(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        conn.recv_armed = true;
        let fd = conn.raw_fd();
        self.io.arm_recv(idx, generation, fd);
    }

    pub(super) fn pause_recv(&mut self, idx: u32, generation: u32) {
        if let Some(conn) = self.conns.get_mut(idx, generation) {
            let fd = conn.raw_fd();
            self.io.pause_recv(idx, generation, fd);
        }
    }

    pub(super) fn arm_udp(&mut self, idx: u32) {
        let sock = &mut self.udp[idx as usize];
        if sock.fd.is_none() {
            return;
        }
        sock.armed = true;
        let fd = sock.raw_fd();
        self.io.arm_udp(idx, fd);
    }

    pub(super) fn submit_send(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        let rest = &conn.tx_inflight[conn.tx_off as usize..];
        conn.send_inflight = true;
        let (ptr, len, fd) = (rest.as_ptr(), rest.len(), conn.raw_fd());
        // SAFETY: `tx_inflight` is neither moved, resized nor freed while
        // `send_inflight` is set: only the send's completion clears it, and
        // the slot is not freed before that (`maybe_finalize`).
        unsafe { self.io.send(idx, generation, fd, ptr, len) };
    }

    /// Brings the outbound budget up to date with stream `idx`'s queue.
    #[inline]
    pub(super) fn account(&mut self, idx: u32) {
        if let Some((conn, _)) = self.conns.at_mut(idx) {
            let now = conn.budgeted();
            if now != conn.accounted as usize {
                self.outbound.change(conn.accounted as usize, now);
                conn.accounted = now as u32;
            }
        }
    }

    /// Makes room for `len` more queued bytes on stream `idx`: while they
    /// would not fit the shard's or the process's budget, evicts the
    /// shard's slowest reader (the stream with the most queued bytes).
    /// False when `idx` itself was evicted or nothing is left to evict.
    #[cold]
    fn make_room(&mut self, idx: u32, len: usize) -> bool {
        while !self.outbound.fits(len) {
            let Some(victim) = self.conns.largest_queue() else {
                return false;
            };
            if let Some((conn, _)) = self.conns.at_mut(victim) {
                // Its queue is dropped now; the turn's flush closes it.
                conn.evicted = true;
                conn.tx_pending = Vec::new();
            }
            self.account(victim);
            self.counters.drop_engine(EngineDrop::OutboundBudget, 1);
            self.mark_dirty(victim);
            if victim == idx {
                return false;
            }
        }
        true
    }

    pub(super) fn mark_dirty(&mut self, idx: u32) {
        if let Some((conn, _)) = self.conns.at_mut(idx) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Frees a closing stream once nothing of it is in flight.
    pub(super) fn maybe_finalize(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        if !conn.closing || conn.recv_armed || conn.send_inflight || conn.connecting {
            return;
        }
        // Closing streams count nothing; this settles one that never did.
        let accounted = std::mem::take(&mut conn.accounted) as usize;
        self.outbound.change(accounted, 0);
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        // The backend closes it when the kernel is done with it.
        if let Some(fd) = conn.fd.take() {
            self.io.close_stream(idx, fd.into_raw_fd());
        }
        self.conns.remove(idx);
    }

    /// A stream's local address: its listener socket's, or for an
    /// outbound stream the one its socket connected from.
    pub(super) fn local_of(&self, c: &crate::conn::Conn) -> SocketAddr {
        match &c.out {
            Some(o) => o.local,
            None => self
                .listeners
                .get(c.sock as usize)
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.local),
        }
    }

    pub(super) fn conn_for(&mut self, id: ConnId) -> Option<(&mut crate::conn::Conn, u32, u32)> {
        let (idx, generation) = Conns::split(id);
        self.conns
            .get_mut(idx, generation)
            .map(|c| (c, idx, generation))
    }
}

impl<B: Backend> Context for Core<B> {
    fn shard(&self) -> ShardId {
        self.shard
    }

    fn shard_count(&self) -> usize {
        self.shard_count
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn write_parts(&mut self, conn: ConnId, parts: &[&[u8]]) -> Result<(), WriteError> {
        let max = self.config.max_outbound;
        let Some((c, idx, _)) = self.conn_for(conn) else {
            return Err(WriteError::UnknownTarget);
        };
        if c.closing {
            return Err(WriteError::UnknownTarget);
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if c.evicted {
            return Err(WriteError::QueueFull);
        }
        if c.tx_len() + c.early_plain_len() + len > max {
            c.want_writable = true;
            return Err(WriteError::QueueFull);
        }
        if c.opening {
            if let Some(o) = c.out.as_deref_mut() {
                if o.tls_client.is_some() || c.tls.is_some() {
                    // A TLS stream not up yet: kept as plaintext, sealed once
                    // the handshake is done (under the stream's cap, not yet
                    // counted in the shard's budget: nothing can be sent
                    // before then).
                    for p in parts {
                        o.early_plain.extend_from_slice(p);
                    }
                    return Ok(());
                }
            }
        }
        if !self.outbound.fits(len) && !self.make_room(idx, len) {
            return Err(WriteError::QueueFull);
        }
        let (idx, generation) = Conns::split(conn);
        let Some((c, spare)) = self.conns.get_mut_and_spare(idx, generation) else {
            return Err(WriteError::UnknownTarget);
        };
        // A drained stream gave its buffer back; a kept one comes now.
        spare.fill(&mut c.tx_pending);
        match c.tls.as_deref_mut() {
            // Framed into records in place; sealed when the queue is flushed.
            Some(s) => {
                if s.write(&mut c.tx_pending, parts).is_err() {
                    c.close_after_flush
                        .get_or_insert(CloseReason::Error(libc::EPROTO));
                    self.mark_dirty(idx);
                    return Err(WriteError::UnknownTarget);
                }
            }
            None => {
                for p in parts {
                    c.tx_pending.extend_from_slice(p);
                }
            }
        }
        self.account(idx);
        self.mark_dirty(idx);
        Ok(())
    }

    fn close(&mut self, conn: ConnId) {
        let Some((c, idx, _)) = self.conn_for(conn) else {
            return;
        };
        if c.close_after_flush.is_none() {
            c.close_after_flush = Some(CloseReason::Local);
        }
        self.mark_dirty(idx);
    }

    fn send_datagram(
        &mut self,
        via: SocketId,
        to: SocketAddr,
        parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        let Some((fd, listener)) = self
            .udp
            .get(via.0 as usize)
            .map(|s| (s.raw_fd(), s.listener))
        else {
            return Err(WriteError::UnknownTarget);
        };
        let (slot, hdr) = match self.sends.fill(&to, parts) {
            Ok(v) => v,
            Err(e) => {
                if e == WriteError::QueueFull {
                    self.counters.drop_engine(EngineDrop::UdpSendSlotsFull, 1);
                }
                return Err(e);
            }
        };
        // SAFETY: the slot (its msghdr, iovec, address and bytes) stays put
        // and untouched until its completion releases it (`SendPool`).
        unsafe { self.io.send_datagram(via.0, fd, slot, listener.0, hdr) };
        Ok(())
    }

    fn send_to_shard(&mut self, shard: ShardId, msg: MeshMessage) -> Result<(), MeshError> {
        self.send_envelope(shard, msg)
    }

    fn broadcast(&mut self, msg: MeshMessage) -> Result<usize, MeshError> {
        let mut accepted = 0;
        let mut refused = None;
        let me = self.shard;
        for to in (0..self.shard_count).filter(|&t| t != me) {
            match self.send_envelope(to, msg.clone()) {
                Ok(()) => accepted += 1,
                Err(e) => {
                    // Counted (mesh_full and a MeshFull drop): never silent.
                    self.counters.drop_plugin(DropReason::MeshFull);
                    refused.get_or_insert(e);
                }
            }
        }
        match refused {
            Some(e) if accepted == 0 => Err(e),
            _ => Ok(accepted),
        }
    }

    fn set_timer(&mut self, after: Duration, token: u64) {
        self.timer_seq += 1;
        self.timers.push(Reverse((
            // A delay too long for the clock is as good as never.
            self.clock
                .now()
                .checked_add(after)
                .unwrap_or_else(|| self.clock.now() + Duration::from_secs(100 * 365 * 86400)),
            self.timer_seq,
            self.current_plugin,
            token,
        )));
    }

    fn record_messages(&mut self, n: u64) {
        self.counters.msgs.add(n);
    }

    fn record_drop(&mut self, reason: DropReason) {
        self.counters.drop_plugin(reason);
    }

    fn record_latency(&mut self, name: &'static str, latency: Duration) {
        self.latency.record(name, latency);
    }

    fn connect(
        &mut self,
        req: ringport_plugin::ConnectRequest,
    ) -> Result<ConnId, ringport_plugin::ConnectError> {
        self.start_connect(req)
    }

    fn peer_identities(&self, conn: ConnId) -> Vec<String> {
        let (idx, generation) = Conns::split(conn);
        self.conns
            .get(idx, generation)
            .and_then(|c| c.tls.as_deref())
            .map(|s| s.peer_identities.clone())
            .unwrap_or_default()
    }

    fn peer(&self, conn: ConnId) -> Option<std::net::SocketAddr> {
        let (idx, generation) = Conns::split(conn);
        self.conns.get(idx, generation).map(|c| c.peer)
    }
}
