//! The shard core: submission helpers (arming receives, sends, timers,
//! wake-ups) and the [`Context`] plugins see.

use super::*;

impl Core {
    /// Pushes an SQE, submitting first if the queue is full.
    pub(super) fn push(&mut self, entry: squeue::Entry) {
        self.inflight += 1;
        loop {
            // SAFETY: every buffer an entry points at (send buffers, msghdrs,
            // the wake buffer) lives in this shard and is not moved or freed
            // until the entry's final completion has been reaped.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // CQ full: the completions will be reaped next turn; make
                    // room by submitting anyway once the kernel accepts.
                    std::thread::yield_now();
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// Submits and runs pending completions without waiting for any.
    pub(super) fn enter_nowait(&mut self) {
        let _ = self.enter.submit_and_wait(&mut self.ring, 0);
    }

    /// Makes sure a timeout operation will wake the shard by `at`: arms one
    /// unless an earlier (or equal) one is already pending. A later pending
    /// one, left armed, fires harmlessly.
    pub(super) fn arm_timer(&mut self, at: Instant) {
        if self.timer_armed.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        self.timer_arms = self.timer_arms.wrapping_add(1);
        let seq = self.timer_arms;
        *self.timer_ts = Timespec::from(at.saturating_duration_since(Instant::now()));
        let e = opcode::Timeout::new(&*self.timer_ts)
            .build()
            .user_data(ops::pack(OP_TIMER, 0, seq));
        self.push(e);
        self.timer_armed = Some((at, seq));
    }

    /// Notes that we queued for `to` this turn.
    pub(super) fn note_target(&mut self, to: ShardId) {
        if !self.sent_to[to] {
            self.sent_to[to] = true;
            self.targets.push(to);
        }
    }

    /// Wakes the parked shards among those we queued for this turn:
    /// MSG_RING into their ring (posted with our next submit), or an eventfd
    /// write.
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
            let peer = &self.peers[to];
            let fd = peer.ring_fd.load(Ordering::Acquire);
            if self.msg_ring && fd >= 0 {
                let e = opcode::MsgRingData::new(Fd(fd), 0, ops::pack(OP_MESH_WAKE, 0, 0), None)
                    .build()
                    .flags(squeue::Flags::SKIP_SUCCESS)
                    .user_data(ops::pack(OP_MSG_RING, 0, to as u32));
                self.push_uncounted(e);
            } else {
                peer.wake();
            }
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

    pub(super) fn push_uncounted(&mut self, entry: squeue::Entry) {
        self.push(entry);
        self.inflight -= 1;
    }

    pub(super) fn arm_accept(&mut self, idx: u32) {
        let fd = self.listeners[idx as usize].fd;
        let e = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ops::pack(OP_ACCEPT, 0, idx));
        self.push(e);
    }

    pub(super) fn arm_recv(&mut self, idx: u32, generation: u32, bgid: u16) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        conn.recv_armed = true;
        let e = opcode::RecvMulti::new(Fd(conn.fd), bgid)
            .build()
            .user_data(ops::pack(OP_RECV, generation, idx));
        self.push(e);
    }

    pub(super) fn arm_udp(&mut self, idx: u32, bgid: u16) {
        let sock = &mut self.udp[idx as usize];
        sock.armed = true;
        let e = opcode::RecvMsgMulti::new(Fd(sock.fd), &*sock.msghdr, bgid)
            .build()
            .user_data(ops::pack(OP_UDP_RECV, 0, idx));
        self.push(e);
    }

    pub(super) fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ops::pack(OP_WAKE, 0, 0));
        self.push(e);
    }

    pub(super) fn cancel(&mut self, target: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(ops::pack(OP_CANCEL, 0, 0));
        self.push(e);
    }

    pub(super) fn submit_send(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.conns.get_mut(idx, generation) else {
            return;
        };
        let rest = &conn.tx_inflight[conn.tx_off..];
        conn.send_inflight = true;
        let e = opcode::Send::new(Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ops::pack(OP_SEND, generation, idx));
        self.push(e);
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
        if !conn.closing || conn.recv_armed || conn.send_inflight {
            return;
        }
        let fd = conn.fd;
        let e = opcode::Close::new(Fd(fd))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(ops::pack(OP_CLOSE, 0, 0));
        // A successful close posts nothing, so it is not counted in flight.
        self.push_uncounted(e);
        self.conns.remove(idx);
    }

    pub(super) fn conn_for(&mut self, id: ConnId) -> Option<(&mut crate::conn::Conn, u32, u32)> {
        let (idx, generation) = Conns::split(id);
        self.conns
            .get_mut(idx, generation)
            .map(|c| (c, idx, generation))
    }
}

impl Context for Core {
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
        if c.tx_len() + len > max {
            return Err(WriteError::QueueFull);
        }
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
        let Some((fd, listener)) = self.udp.get(via.0 as usize).map(|s| (s.fd, s.listener)) else {
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
        let e = opcode::SendMsg::new(Fd(fd), hdr)
            .build()
            .user_data(ops::pack(OP_UDP_SEND, u32::from(listener.0), slot));
        self.push(e);
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
            self.clock.now() + after,
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
}
