//! Streams: accepting, receiving into plugins, sending, closing, timeouts
//! and the drain.

use super::*;

impl<B: Backend> Shard<B> {
    pub(super) fn on_accept(&mut self, idx: u32, result: Result<i32, i32>, more: bool) {
        match result {
            Ok(fd) => {
                if let Some(p) = self.accept_pause.get_mut(idx as usize) {
                    p.step = ACCEPT_BACKOFF_MIN;
                }
                self.accept_stream(idx, fd)
            }
            Err(libc::ECANCELED) => {}
            Err(errno) => {
                self.core.counters.drop_engine(EngineDrop::AcceptFailed, 1);
                if matches!(
                    errno,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    // Out of descriptors or memory: accepting again at once
                    // would fail again at once, spinning the shard. Pause
                    // this listener (50 ms, doubling to 1 s while it lasts);
                    // connections wait in the kernel's backlog.
                    self.pause_accept(idx, more);
                    return;
                }
            }
        }
        if !more && !self.core.stopping && !self.guard.draining() && result != Err(libc::ECANCELED)
        {
            self.core.arm_accept(idx);
        }
    }

    #[cold]
    fn pause_accept(&mut self, idx: u32, armed: bool) {
        let now = self.core.clock.now();
        let Some(p) = self.accept_pause.get_mut(idx as usize) else {
            return;
        };
        p.until = Some(now + p.step);
        p.step = (p.step * 2).min(ACCEPT_BACKOFF_MAX);
        self.core.counters.accept_pauses.add(1);
        // A listener still armed after the error (a readiness backend
        // keeps it) is taken off until the pause ends.
        if let Some(fd) = self.core.listeners[idx as usize]
            .fd
            .as_ref()
            .filter(|_| armed)
        {
            let fd = fd.as_raw_fd();
            self.core.io.stop_accept(idx, fd);
        }
    }

    /// Accepts again on the listeners whose pause has ended.
    pub(super) fn resume_accepts(&mut self) {
        let now = self.core.clock.now();
        for i in 0..self.accept_pause.len() {
            if self.accept_pause[i].until.is_some_and(|at| at <= now) {
                self.accept_pause[i].until = None;
                if !self.core.stopping && !self.guard.draining() {
                    self.core.arm_accept(i as u32);
                }
            }
        }
    }

    /// When the next paused listener accepts again.
    pub(super) fn next_accept_resume(&self) -> Option<Instant> {
        self.accept_pause.iter().filter_map(|p| p.until).min()
    }

    pub(super) fn accept_stream(&mut self, lidx: u32, raw: i32) {
        // SAFETY: the kernel just handed this descriptor to us and nobody
        // else holds it; from here on it closes when dropped.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let (listener, plugin, local) = {
            let l = &self.core.listeners[lidx as usize];
            (l.listener, l.plugin, l.local)
        };
        // A source the allowlists cannot see is never let in: a peer that
        // reset between the handshake and here has no address to judge.
        let Some(peer) = addr::peer_of(raw) else {
            self.core.counters.drop_engine(EngineDrop::PeerUnknown, 1);
            return;
        };
        let fd = raw;
        let Some((cidx, generation)) = self.core.conns.insert(owned, plugin, listener.0) else {
            // The table is full: `owned` closed as `insert` dropped it.
            self.core.counters.drop_engine(EngineDrop::AcceptFailed, 1);
            return;
        };
        socket::set_nodelay(fd);
        if let Some(c) = self.core.conns.get_mut(cidx, generation) {
            c.peer = peer;
            c.sock = lidx;
        }
        // Allowlist and limits before any plugin code.
        let Some(admitted) = self
            .guard
            .admit(listener.0, peer, local, self.core.clock.now())
        else {
            // Nothing was submitted for it: removing the slot closes it.
            self.core.conns.remove(cidx);
            return;
        };
        if self
            .tls
            .get(listener.0 as usize)
            .is_some_and(Option::is_some)
        {
            self.accept_tls(cidx, generation, listener, admitted);
            return;
        }
        let id = Conns::id(cidx, generation);
        let info = StreamInfo {
            conn: id,
            listener,
            peer,
            local,
        };
        self.core.current_plugin = plugin;
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        let verdict = match guarded(|| p.handle_open(core, &info)) {
            Some(v) => v,
            None => {
                // A panic refuses the stream, as a rejection would.
                self.plugin_panicked("handle_open", listener.0, peer);
                Verdict::Reject
            }
        };
        match verdict {
            Verdict::Accept => {
                self.core.counters.conns_accepted.add(1);
                if let Some(c) = self.core.conns.get_mut(cidx, generation) {
                    c.accepted = true;
                    c.guarded = true;
                }
                self.core.arm_recv(cidx, generation);
                let now = self.core.clock.now();
                self.guard
                    .opened(cidx, generation, listener.0, peer, local, admitted, now);
            }
            Verdict::Reject => {
                self.guard.rejected(listener.0, peer);
                self.core.counters.conns_rejected.add(1);
                // Nothing was submitted for it: removing the slot closes it.
                self.core.conns.remove(cidx);
            }
        }
    }

    pub(super) fn on_recv(&mut self, idx: u32, generation: u32, result: RecvResult, more: bool) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            if let RecvResult::Data { buf, .. } = result {
                self.bufs.recycle_tcp(buf);
            }
            return;
        };
        if !more {
            conn.recv_armed = false;
        }
        match result {
            RecvResult::Data { buf, len } => {
                self.deliver(idx, generation, buf, len as usize);
                self.bufs.recycle_tcp(buf);
            }
            RecvResult::Eof => self.peer_finished(idx, generation),
            RecvResult::NoBuffers => {
                self.core.counters.buffer_ring_empty.add(1);
                self.bufs.tcp_ran_dry();
            }
            // We cancelled it: backpressure pause or teardown.
            RecvResult::Cancelled => {}
            RecvResult::Error(errno) => {
                let reason = if errno == libc::ECONNRESET || errno == libc::EPIPE {
                    CloseReason::PeerReset
                } else {
                    CloseReason::Error(errno)
                };
                self.teardown(idx, generation, reason);
            }
        }
        self.after_io(idx, generation);
    }

    /// Re-arms or finalises a stream after one of its completions.
    pub(super) fn after_io(&mut self, idx: u32, generation: u32) {
        let stopping = self.core.stopping;
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing {
            self.core.maybe_finalize(idx, generation);
            return;
        }
        if !conn.recv_armed
            && !conn.paused
            && !conn.read_closed
            && !stopping
            && conn.close_after_flush.is_none()
        {
            self.core.arm_recv(idx, generation);
        }
    }

    /// Hands received bytes to the plugin (through TLS on a `tls`
    /// listener), keeping what it does not consume.
    pub(super) fn deliver(&mut self, idx: u32, generation: u32, bid: u16, len: usize) {
        self.core.counters.bytes_in.add(len as u64);
        self.guard.bytes_in(idx, len, &self.core.clock);
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.tls.is_some() {
            self.deliver_tls(idx, generation, bid, len);
            return;
        }
        if !conn.first_checked && self.client_hello_on_plain_port(idx, generation, bid, len) {
            return;
        }
        self.deliver_plain(idx, generation, bid, len, false);
    }

    /// Hands the first `len` bytes of buffer `bid` to the plugin, after
    /// what it kept from before; `pending_grew`: bytes were added to what it
    /// kept (TLS: a record that began in an earlier buffer), so it runs even
    /// when `len` is 0.
    pub(super) fn deliver_plain(
        &mut self,
        idx: u32,
        generation: u32,
        bid: u16,
        len: usize,
        pending_grew: bool,
    ) {
        let bytes = self.bufs.tcp(bid, len);
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing || conn.close_after_flush.is_some() || (len == 0 && !pending_grew) {
            return;
        }
        let plugin = conn.plugin;
        let id = Conns::id(idx, generation);
        self.core.current_plugin = plugin;
        let result = if conn.rx_pending.is_empty() {
            let p = &mut self.plugins[plugin as usize];
            let core = &mut self.core;
            let Some(r) = guarded(|| p.handle_data(core, id, bytes)) else {
                self.data_panicked(idx, generation);
                return;
            };
            if let Ok(n) = r {
                if n < bytes.len() {
                    if let Some((conn, spare)) = self.core.conns.get_mut_and_spare(idx, generation)
                    {
                        spare.fill(&mut conn.rx_pending);
                        conn.rx_pending.extend_from_slice(&bytes[n..]);
                    }
                }
            }
            r.map(|_| ())
        } else {
            conn.rx_pending.extend_from_slice(bytes);
            self.run_pending(idx, generation)
        };
        self.after_deliver(idx, generation, result);
    }

    /// Presents the kept bytes of a stream to its plugin again.
    pub(super) fn run_pending(&mut self, idx: u32, generation: u32) -> Result<(), DropReason> {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return Ok(());
        };
        let plugin = conn.plugin;
        let mut data = std::mem::take(&mut conn.rx_pending);
        let id = Conns::id(idx, generation);
        self.core.current_plugin = plugin;
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        let r = guarded(|| p.handle_data(core, id, &data));
        if let Some(Ok(n)) = r {
            data.drain(..n.min(data.len()));
        }
        if let Some(conn) = self.core.conns.get_mut(idx, generation) {
            conn.rx_pending = data;
        }
        match r {
            Some(r) => r.map(|_| ()),
            None => {
                self.data_panicked(idx, generation);
                Ok(())
            }
        }
    }

    /// `handle_data` panicked: the stream is closed (the plugin still hears
    /// `handle_close`, as every accepted stream does), counted and logged.
    fn data_panicked(&mut self, idx: u32, generation: u32) {
        let Some(conn) = self.core.conns.get(idx, generation) else {
            return;
        };
        let (listener, peer) = (conn.listener, conn.peer);
        self.plugin_panicked("handle_data", listener, peer);
        self.guard
            .set_cause(idx, generation, crate::log::CloseCause::PluginPanic);
        self.teardown(idx, generation, CloseReason::Error(libc::EIO));
    }

    pub(super) fn after_deliver(
        &mut self,
        idx: u32,
        generation: u32,
        result: Result<(), DropReason>,
    ) {
        if self
            .core
            .conns
            .get(idx, generation)
            .map_or(true, |c| c.closing)
        {
            return;
        }
        // A plugin that keeps more unconsumed bytes than a stream may queue
        // outbound is not going to make progress: close rather than grow.
        let result = match (result, self.core.conns.get_mut(idx, generation)) {
            (Ok(()), Some(c)) if c.rx_pending.len() > self.core.config.max_outbound => {
                Err(DropReason::QueueFull)
            }
            (r, _) => r,
        };
        match result {
            Err(reason) => {
                self.core.counters.drop_plugin(reason);
                self.core.counters.conns_protocol_closed.add(1);
                self.teardown(idx, generation, CloseReason::Protocol(reason));
            }
            Ok(()) => {
                let pause_at = self.core.config.pause_outbound;
                let Some(conn) = self.core.conns.get_mut(idx, generation) else {
                    return;
                };
                if !conn.paused && conn.tx_len() >= pause_at {
                    conn.paused = true;
                    self.core.counters.backpressure_pauses.add(1);
                    if conn.recv_armed {
                        self.core.pause_recv(idx, generation);
                    }
                }
            }
        }
    }

    pub(super) fn on_send(&mut self, idx: u32, generation: u32, res: i32) {
        let resume_below = self.core.config.pause_outbound / 2;
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        conn.send_inflight = false;
        if conn.closing {
            self.core.maybe_finalize(idx, generation);
            return;
        }
        if res < 0 {
            let reason = if res == -libc::EPIPE || res == -libc::ECONNRESET {
                CloseReason::PeerReset
            } else {
                CloseReason::Error(-res)
            };
            self.teardown(idx, generation, reason);
            return;
        }
        self.core.counters.bytes_out.add(res as u64);
        self.guard.bytes_out(idx, res as usize, &self.core.clock);
        conn.tx_off += res as u32;
        if conn.tx_off as usize >= conn.tx_inflight.len() {
            conn.tx_inflight.clear();
            conn.tx_off = 0;
        }
        self.core.account(idx);
        self.core.mark_dirty(idx);
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.want_writable && conn.tx_len() <= self.core.config.max_outbound / 2 {
            conn.want_writable = false;
            if !self.writable(idx, generation) {
                return;
            }
        }
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.paused && conn.tx_len() <= resume_below {
            conn.paused = false;
            if !conn.rx_pending.is_empty() {
                let r = self.run_pending(idx, generation);
                self.after_deliver(idx, generation, r);
            }
            self.after_io(idx, generation);
        }
    }

    /// `handle_writable`; false if the plugin panicked (the stream is then
    /// torn down).
    fn writable(&mut self, idx: u32, generation: u32) -> bool {
        let Some(conn) = self.core.conns.get(idx, generation) else {
            return false;
        };
        let (plugin, listener, peer) = (conn.plugin, conn.listener, conn.peer);
        self.core.current_plugin = plugin;
        let id = Conns::id(idx, generation);
        let p = &mut self.plugins[plugin as usize];
        let core = &mut self.core;
        if super::guarded(|| p.handle_writable(core, id)).is_none() {
            self.plugin_panicked("handle_writable", listener, peer);
            self.teardown(idx, generation, CloseReason::Error(libc::EIO));
            return false;
        }
        true
    }

    /// Starts closing a stream: tells the plugin, cancels its receive, and
    /// frees the slot once no operation of it is in flight.
    pub(super) fn teardown(&mut self, idx: u32, generation: u32, reason: CloseReason) {
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        if conn.closing {
            return;
        }
        if conn.opening {
            // Not open yet: no `handle_close`; the plugin hears that its
            // connect failed (cancelled by a close, an eviction or the
            // shutdown; or the peer's doing during a TLS handshake).
            self.abort_connect(idx, generation, connect::failure_of_close(reason));
            return;
        }
        if conn.tls.as_ref().is_some_and(|s| s.handshaking()) {
            self.tls_aborted(idx, generation, reason);
        }
        let Some(conn) = self.core.conns.get_mut(idx, generation) else {
            return;
        };
        conn.closing = true;
        conn.tx_pending.clear();
        if conn.send_inflight {
            // Whatever is in flight is abandoned: a peer that is not
            // reading would hold the send, and the slot, forever. Shutting
            // the socket down completes the send at once.
            socket::shutdown(conn.raw_fd());
        }
        let accepted = conn.accepted;
        let guarded = conn.guarded;
        let peer = conn.peer;
        let plugin = conn.plugin;
        let recv_armed = conn.recv_armed;
        if recv_armed {
            self.core.pause_recv(idx, generation);
        }
        self.core.account(idx);
        if guarded {
            self.guard
                .closed(idx, generation, peer, reason, self.core.clock.now());
        }
        if accepted {
            self.core.counters.conns_closed.add(1);
            self.core.current_plugin = plugin;
            let id = Conns::id(idx, generation);
            let p = &mut self.plugins[plugin as usize];
            let core = &mut self.core;
            if super::guarded(|| p.handle_close(core, id, reason)).is_none() {
                let listener = self
                    .core
                    .conns
                    .get(idx, generation)
                    .map_or(u16::MAX, |c| c.listener);
                self.plugin_panicked("handle_close", listener, peer);
            }
        }
        self.core.maybe_finalize(idx, generation);
    }

    /// Turns queued stream bytes into sends and carries out deferred closes.
    #[inline]
    pub(super) fn flush(&mut self) {
        if !self.core.dirty.is_empty() {
            self.flush_dirty();
        }
    }

    fn flush_dirty(&mut self) {
        let mut i = 0;
        while i < self.core.dirty.len() {
            let idx = self.core.dirty[i];
            i += 1;
            self.core.account(idx);
            let Some((conn, generation)) = self.core.conns.at_mut(idx) else {
                continue;
            };
            conn.dirty = false;
            if conn.closing {
                continue;
            }
            if conn.evicted {
                self.guard
                    .set_cause(idx, generation, crate::log::CloseCause::OutboundBudget);
                self.teardown(idx, generation, CloseReason::Error(libc::ENOBUFS));
                continue;
            }
            if conn.connecting {
                // Queued bytes wait for the connect (which marks the
                // stream dirty again); a close cancels it.
                if let Some(reason) = conn.close_after_flush {
                    self.teardown(idx, generation, reason);
                }
                continue;
            }
            if let Some(s) = conn.tls.as_deref_mut() {
                // A graceful close says so in TLS too; then every record
                // written is sealed before the kernel gets the queue.
                if matches!(
                    conn.close_after_flush,
                    Some(CloseReason::PeerClosed | CloseReason::Local)
                ) && s.established()
                {
                    s.close_notify(&mut conn.tx_pending);
                }
                if s.seal_open_record(&mut conn.tx_pending).is_err() {
                    self.guard
                        .set_cause(idx, generation, crate::log::CloseCause::TlsError);
                    self.teardown(idx, generation, CloseReason::Error(libc::EPROTO));
                    continue;
                }
            }
            if !conn.send_inflight && (conn.tx_off as usize) < conn.tx_inflight.len() {
                // A short send: the rest of the in-flight buffer goes first.
                self.core.submit_send(idx, generation);
            } else if !conn.send_inflight && !conn.tx_pending.is_empty() {
                std::mem::swap(&mut conn.tx_pending, &mut conn.tx_inflight);
                conn.tx_off = 0;
                self.core.submit_send(idx, generation);
            } else if !conn.send_inflight && conn.tx_len() == 0 {
                if let Some(reason) = conn.close_after_flush {
                    self.teardown(idx, generation, reason);
                }
            }
        }
        self.core.dirty.clear();
    }
}

/// Timeouts and the drain.
impl<B: Backend> Shard<B> {
    /// Closes the streams whose first-bytes, idle or half-closed deadline
    /// has passed (the plugin hears `Error(ETIMEDOUT)`).
    pub(super) fn expire_streams(&mut self) {
        if self
            .guard
            .next_deadline()
            .map_or(true, |at| at > self.core.clock.now())
        {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.guard.poll_expired(self.core.clock.now(), &mut expired);
        for &(idx, generation) in &expired {
            self.teardown(idx, generation, CloseReason::Error(libc::ETIMEDOUT));
        }
        expired.clear();
        self.expired = expired;
    }

    /// Once a drain starts: stop accepting and close the UDP sockets; open
    /// streams go on until they finish or the engine is stopped.
    pub(super) fn start_drain(&mut self) {
        if self.drained || !self.guard.draining() {
            return;
        }
        self.drained = true;
        // An in-flight accept or receive holds its own reference to the
        // socket until cancelled, and the backend keeps what the receives
        // point at until they complete, so each socket closes right away.
        for i in 0..self.core.listeners.len() {
            if let Some(fd) = self.core.listeners[i].fd.take() {
                self.core.io.stop_accept(i as u32, fd.as_raw_fd());
            }
        }
        for i in 0..self.core.udp.len() {
            if let Some(fd) = self.core.udp[i].fd.take() {
                self.core.io.stop_udp(i as u32, fd.as_raw_fd());
            }
        }
    }
}
