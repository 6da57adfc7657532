//! The subscription table and the retained-message store of one shard, both
//! tries of topic levels.
//!
//! [`SubscriptionTable`] holds filters: each node is one level, with its
//! exact-level children in a short list (a hash map once there are many),
//! one child for `+` and a slot for the subscriptions ending in `/#` there.
//! Matching a topic walks, at each level, only the child named by that level
//! and the `+` child, and collects the `#` slots on the way: its cost is the
//! number of levels times the branches actually taken, whatever the number
//! of filters held.
//!
//! [`RetainedStore`] holds topic names: a filter walks only the children its
//! levels name; a `+` or `#` walks all children of its level, as it must.
//!
//! Both keep their nodes in an arena (a `Vec` plus a free list) and work with
//! explicit stacks, never recursion: a filter of 30,000 levels can neither
//! overflow the stack nor make dropping the trie recursive. Removing the last
//! entry under a node frees the node (tests pin that the node count returns
//! to 0), and freed nodes are reused; when the trie empties completely the
//! arena itself is released.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use super::codec::QoS;
use super::topic::{parse_filter, TopicError};

/// Index of a node in an arena.
type NodeId = usize;
/// The root, which is no node's child: `0` as a child link means "none".
const ROOT: NodeId = 0;
/// No `+` child.
const NONE: NodeId = 0;
/// The position of a topic (or filter) whose levels are all consumed.
const END: usize = usize::MAX;

/// The level at byte `pos` of `s` and the position of the next level
/// ([`END`] when it was the last).
fn level_at(s: &str, pos: usize) -> (&str, usize) {
    let rest = &s[pos..];
    // A byte scan: `/` is ASCII, so it never occurs inside a multi-byte
    // character, and topic levels are short (a `char` pattern search costs
    // more than the whole level on the per-message path).
    match rest.bytes().position(|b| b == b'/') {
        Some(i) => (&rest[..i], pos + i + 1),
        None => (rest, END),
    }
}

/// What one subscription asks for (the subscription options of MQTT 5.0,
/// 3.8.3.1; a 3.1.1 subscription only sets `qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    /// The maximum QoS granted.
    pub qos: QoS,
    /// Do not deliver the subscriber's own publications back to it.
    pub no_local: bool,
    /// Forward the RETAIN flag as published instead of clearing it.
    pub retain_as_published: bool,
    /// When to send retained messages: 0 at every subscribe, 1 only when the
    /// subscription is new, 2 never.
    pub retain_handling: u8,
    /// The Subscription Identifier to send back with matching messages.
    pub sub_id: Option<u32>,
}

impl SubEntry {
    /// A subscription at `qos` with every other option at its default
    /// (what a 3.1.1 `SUBSCRIBE` gives).
    pub fn new(qos: QoS) -> Self {
        SubEntry {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            sub_id: None,
        }
    }
}

/// Above this many subscriptions, a filter's (or a group's) members move
/// from a sorted vector to a B-tree...
const FEW_MAX: usize = 64;
/// ...and below this many they move back (apart from `FEW_MAX`, so that one
/// subscriber coming and going at the boundary does not convert each time).
const FEW_MIN: usize = 16;

/// The subscriptions of one filter, or of one shared group, in key order.
///
/// Most filters have a handful of subscribers: a sorted vector is the
/// smallest and fastest. Some have very many (every device of a fleet on
/// `fleet/cmd/all`): there a vector would move megabytes at each subscriber
/// that leaves, so they live in a B-tree, O(log n) per change.
#[derive(Debug)]
enum Members<K> {
    Few(Vec<(K, SubEntry)>),
    Many(BTreeMap<K, SubEntry>),
}

impl<K: Copy + Ord> Members<K> {
    fn is_empty(&self) -> bool {
        match self {
            Members::Few(v) => v.is_empty(),
            Members::Many(m) => m.is_empty(),
        }
    }

    /// Adds or replaces; true when new.
    fn insert(&mut self, key: K, entry: SubEntry) -> bool {
        match self {
            Members::Few(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => {
                    v[i].1 = entry;
                    false
                }
                Err(i) if v.len() < FEW_MAX => {
                    v.insert(i, (key, entry));
                    true
                }
                Err(_) => {
                    let mut m: BTreeMap<K, SubEntry> = v.drain(..).collect();
                    m.insert(key, entry);
                    *self = Members::Many(m);
                    true
                }
            },
            Members::Many(m) => m.insert(key, entry).is_none(),
        }
    }

    /// Removes; true when it was there.
    fn remove(&mut self, key: K) -> bool {
        match self {
            Members::Few(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => {
                    v.remove(i);
                    true
                }
                Err(_) => false,
            },
            Members::Many(m) => {
                let removed = m.remove(&key).is_some();
                if m.len() < FEW_MIN {
                    *self = Members::Few(std::mem::take(m).into_iter().collect());
                }
                removed
            }
        }
    }

    /// Appends every member to `out`.
    fn append_to(&self, out: &mut Vec<(K, SubEntry)>) {
        match self {
            Members::Few(v) => out.extend_from_slice(v),
            Members::Many(m) => out.extend(m.iter().map(|(k, e)| (*k, *e))),
        }
    }

    /// The first member after key `last`, wrapping around to the first one.
    fn after(&self, last: Option<K>) -> Option<(K, SubEntry)> {
        match self {
            Members::Few(v) => {
                let i = last.map_or(0, |l| v.partition_point(|(k, _)| *k <= l));
                v.get(i).or(v.first()).copied()
            }
            Members::Many(m) => last
                .and_then(|l| m.range((Excluded(l), Unbounded)).next())
                .or_else(|| m.iter().next())
                .map(|(k, e)| (*k, *e)),
        }
    }
}

/// A shared subscription group of one filter: `$share/{name}/{filter}`.
#[derive(Debug)]
struct Group<K> {
    name: Box<str>,
    /// The whole filter, `$share/{name}/{filter}`, as subscribed.
    filter: Arc<str>,
    members: Members<K>,
    /// The member served last: the next message goes to the member after it
    /// in key order (whoever joined or left meanwhile).
    last: Option<K>,
}

impl<K: Copy + Ord> Group<K> {
    /// The member whose turn it is, who then becomes the last served.
    fn take_turn(&mut self) -> Option<(K, SubEntry)> {
        // A group is never empty: its last member's removal drops it.
        let m = self.members.after(self.last)?;
        self.last = Some(m.0);
        Some(m)
    }
}

/// The subscriptions that end at one place of the trie.
#[derive(Debug)]
struct Slot<K> {
    /// Plain subscriptions.
    plain: Members<K>,
    /// Shared groups, in creation order.
    groups: Vec<Group<K>>,
}

impl<K> Default for Slot<K> {
    fn default() -> Self {
        Slot {
            plain: Members::Few(Vec::new()),
            groups: Vec::new(),
        }
    }
}

impl<K: Copy + Ord> Slot<K> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    /// Adds or replaces; true when new. `filter` is the whole filter as
    /// subscribed (kept by a new group).
    fn insert(&mut self, filter: &str, group: Option<&str>, key: K, entry: SubEntry) -> bool {
        let Some(name) = group else {
            return self.plain.insert(key, entry);
        };
        let gi = match self.groups.iter().position(|g| &*g.name == name) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    name: name.into(),
                    filter: filter.into(),
                    members: Members::Few(Vec::new()),
                    last: None,
                });
                self.groups.len() - 1
            }
        };
        self.groups[gi].members.insert(key, entry)
    }

    /// Removes; true when it was there.
    fn remove(&mut self, group: Option<&str>, key: K) -> bool {
        let Some(name) = group else {
            return self.plain.remove(key);
        };
        let Some(gi) = self.groups.iter().position(|g| &*g.name == name) else {
            return false;
        };
        let removed = self.groups[gi].members.remove(key);
        if self.groups[gi].members.is_empty() {
            self.groups.remove(gi);
        }
        removed
    }

    /// Appends every plain subscription and one member of each group,
    /// advancing each group's turn.
    fn emit(&mut self, out: &mut Vec<(K, SubEntry)>) {
        self.plain.append_to(out);
        for g in &mut self.groups {
            if let Some(m) = g.take_turn() {
                out.push(m);
            }
        }
    }

    /// Appends one member of each group with the group's filter, advancing
    /// each group's turn; plain subscriptions are left out.
    fn emit_groups(&mut self, out: &mut Vec<(K, SubEntry, Arc<str>)>) {
        for g in &mut self.groups {
            if let Some((k, e)) = g.take_turn() {
                out.push((k, e, Arc::clone(&g.filter)));
            }
        }
    }
}

/// Children of a subscription trie node by exact level: a short list
/// compared in place while there are at most [`FEW_CHILDREN`] (most nodes of a
/// device fleet's tree have one or a few, and comparing a few short levels
/// costs less than hashing one), a hash map (keyed SipHash: levels are
/// chosen by clients) past that.
#[derive(Debug)]
enum Children {
    Few(Vec<(Box<str>, NodeId)>),
    // Boxed on purpose: every node holds a `Children`, and the map's
    // header (48 bytes) would make each one that large.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Box<str>, NodeId>>),
}

/// Children a node keeps in a list before it moves them to a map.
const FEW_CHILDREN: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn get(&self, level: &str) -> Option<&NodeId> {
        match self {
            Children::Few(v) => v.iter().find(|(l, _)| **l == *level).map(|(_, c)| c),
            Children::Many(m) => m.get(level),
        }
    }

    /// Adds `level` (not a child yet).
    fn insert(&mut self, level: Box<str>, child: NodeId) {
        match self {
            Children::Few(v) if v.len() < FEW_CHILDREN => v.push((level, child)),
            Children::Few(v) => {
                let mut m: HashMap<Box<str>, NodeId> = std::mem::take(v).into_iter().collect();
                m.insert(level, child);
                *self = Children::Many(Box::new(m));
            }
            Children::Many(m) => {
                m.insert(level, child);
            }
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(v) => {
                if let Some(i) = v.iter().position(|(l, _)| **l == *level) {
                    v.swap_remove(i);
                }
            }
            Children::Many(m) => {
                m.remove(level);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }
}

/// One level of the subscription trie.
#[derive(Debug)]
struct Node<K> {
    /// Children by exact level.
    children: Children,
    /// The `+` child, or [`NONE`].
    plus: NodeId,
    /// Subscriptions whose filter ends at this level.
    here: Slot<K>,
    /// Subscriptions whose filter is this level followed by `/#` (for the
    /// root: `#`), which match this level and everything below it.
    multi: Slot<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node {
            children: Children::default(),
            plus: NONE,
            here: Slot::default(),
            multi: Slot::default(),
        }
    }
}

impl<K: Copy + Ord> Node<K> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus == NONE
            && self.here.is_empty()
            && self.multi.is_empty()
    }
}

/// The subscription table of one shard. `K` names a subscriber (a session
/// or connection id; `Copy + Ord`).
///
/// Each subscription is a (filter, key) pair with a [`SubEntry`]; a
/// `$share/{group}/{filter}` filter makes `key` a member of that group of
/// that filter. [`matches`](Self::matches) costs the topic's levels times the
/// trie branches actually taken (exact level, `+`, and the `#` slots), not the
/// number of subscriptions, and does not allocate once its scratch stack and
/// `out` have grown.
///
/// Results are deterministic: plain subscriptions of one filter come in key
/// order, and a group's members take turns in key order.
#[derive(Debug)]
pub struct SubscriptionTable<K> {
    /// `nodes[0]` is the root; freed nodes are reset and listed in `free`.
    nodes: Vec<Node<K>>,
    free: Vec<NodeId>,
    len: usize,
    /// Scratch for `matches`: (node, position of the next topic level).
    stack: Vec<(NodeId, usize)>,
    /// Scratch for `remove`: the nodes from the root to the filter's end.
    path: Vec<NodeId>,
}

impl<K: Copy + Ord> Default for SubscriptionTable<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Ord> SubscriptionTable<K> {
    /// An empty table.
    pub fn new() -> Self {
        SubscriptionTable {
            nodes: vec![Node::default()],
            free: Vec::new(),
            len: 0,
            stack: Vec::new(),
            path: Vec::new(),
        }
    }

    /// Adds or replaces `key`'s subscription to `filter` (a `$share/g/f`
    /// filter joins group `g` of filter `f`). Returns true when it was new,
    /// false when it replaced one, or when `filter` is invalid (then nothing
    /// is stored; [`try_insert`](Self::try_insert) tells why).
    pub fn insert(&mut self, filter: &str, key: K, entry: SubEntry) -> bool {
        self.try_insert(filter, key, entry).unwrap_or(false)
    }

    /// [`insert`](Self::insert), with the reason an invalid filter is refused
    /// ([`parse_filter`]).
    pub fn try_insert(
        &mut self,
        filter: &str,
        key: K,
        entry: SubEntry,
    ) -> Result<bool, TopicError> {
        let parsed = parse_filter(filter)?;
        let mut n = ROOT;
        let mut multi = false;
        for level in parsed.filter().split('/') {
            match level {
                // Valid filters have `#` last only.
                "#" => {
                    multi = true;
                    break;
                }
                "+" => {
                    n = match self.nodes[n].plus {
                        NONE => {
                            let c = self.alloc();
                            self.nodes[n].plus = c;
                            c
                        }
                        c => c,
                    }
                }
                _ => {
                    n = match self.nodes[n].children.get(level) {
                        Some(&c) => c,
                        None => {
                            let c = self.alloc();
                            self.nodes[n].children.insert(level.into(), c);
                            c
                        }
                    }
                }
            }
        }
        let node = &mut self.nodes[n];
        let slot = if multi {
            &mut node.multi
        } else {
            &mut node.here
        };
        let new = slot.insert(filter, parsed.group(), key, entry);
        if new {
            self.len += 1;
        }
        Ok(new)
    }

    /// Removes `key`'s subscription to `filter` (as given to
    /// [`insert`](Self::insert), `$share/` prefix included). Returns whether
    /// there was one. Nodes left without subscriptions below them are freed.
    pub fn remove(&mut self, filter: &str, key: K) -> bool {
        let Ok(parsed) = parse_filter(filter) else {
            return false;
        };
        let f = parsed.filter();
        let mut path = std::mem::take(&mut self.path);
        path.clear();
        path.push(ROOT);
        let mut n = ROOT;
        let mut multi = false;
        let mut found = true;
        for level in f.split('/') {
            let node = &self.nodes[n];
            let next = match level {
                "#" => {
                    multi = true;
                    break;
                }
                "+" => node.plus,
                _ => node.children.get(level).copied().unwrap_or(NONE),
            };
            if next == NONE {
                found = false;
                break;
            }
            n = next;
            path.push(n);
        }
        let removed = found && {
            let node = &mut self.nodes[n];
            let slot = if multi {
                &mut node.multi
            } else {
                &mut node.here
            };
            slot.remove(parsed.group(), key)
        };
        if removed {
            self.len -= 1;
            // Free empty nodes from the end of the path upwards; path[i] is
            // the child of path[i - 1] through the filter's level i - 1.
            let exact_levels = f.rsplit('/').skip(usize::from(multi));
            for (i, level) in (1..path.len()).rev().zip(exact_levels) {
                let child = path[i];
                if !self.nodes[child].is_empty() {
                    break;
                }
                let parent = &mut self.nodes[path[i - 1]];
                if level == "+" {
                    parent.plus = NONE;
                } else {
                    parent.children.remove(level);
                }
                self.release(child);
            }
            if self.node_count() == 0 {
                self.nodes.truncate(1);
                self.nodes.shrink_to_fit();
                self.nodes[ROOT].children = Children::default();
                self.free = Vec::new();
            }
        }
        self.path = path;
        removed
    }

    /// The number of subscriptions held (each member of a shared group
    /// counts once).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of trie nodes in use, the root not counted: 0 for an empty
    /// table. Memory grows with this, not with [`len`](Self::len) alone.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - 1 - self.free.len()
    }

    /// Appends to `out`, as (key, entry), every subscription whose filter
    /// matches the topic name `topic`: every plain one, and for each matching
    /// shared group exactly one member, chosen round robin (that is why this
    /// takes `&mut self`). A subscriber with overlapping filters appears once
    /// per filter: the caller merges. A topic starting with `$` is not
    /// matched by filters starting with `+` or `#`.
    ///
    /// `topic` should be a valid topic name; anything else gets an answer,
    /// never a panic.
    pub fn matches(&mut self, topic: &str, out: &mut Vec<(K, SubEntry)>) {
        self.visit(topic, |slot| slot.emit(out));
    }

    /// Like [`matches`](Self::matches) for shared groups only: appends one
    /// member of each matching group, with the group's whole filter
    /// (`$share/{group}/{filter}`, as subscribed), so that a delivery that
    /// finds its member gone can ask [`next_in_group`](Self::next_in_group)
    /// for another.
    pub fn matches_shared(&mut self, topic: &str, out: &mut Vec<(K, SubEntry, Arc<str>)>) {
        self.visit(topic, |slot| slot.emit_groups(out));
    }

    /// The member of the shared group of `filter` (`$share/{group}/...`)
    /// after `after` in the group's turn order, which becomes the last
    /// served; `None` when the group is gone or has no member but `after`.
    pub fn next_in_group(&mut self, filter: &str, after: K) -> Option<(K, SubEntry)> {
        let parsed = parse_filter(filter).ok()?;
        let name = parsed.group()?;
        let mut n = ROOT;
        let mut multi = false;
        for level in parsed.filter().split('/') {
            let node = &self.nodes[n];
            n = match level {
                "#" => {
                    multi = true;
                    break;
                }
                "+" => node.plus,
                _ => node.children.get(level).copied().unwrap_or(NONE),
            };
            if n == NONE {
                return None;
            }
        }
        let node = &mut self.nodes[n];
        let slot = if multi {
            &mut node.multi
        } else {
            &mut node.here
        };
        let g = slot.groups.iter_mut().find(|g| &*g.name == name)?;
        let m = g.members.after(Some(after))?;
        if m.0 == after {
            return None;
        }
        g.last = Some(m.0);
        Some(m)
    }

    /// Calls `f` on every slot whose subscriptions match the topic name
    /// `topic`.
    fn visit(&mut self, topic: &str, mut f: impl FnMut(&mut Slot<K>)) {
        if self.len == 0 {
            // Most shards have no shared group at all.
            return;
        }
        let dollar = topic.starts_with('$');
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push((ROOT, 0));
        while let Some((n, pos)) = stack.pop() {
            let node = &mut self.nodes[n];
            let wildcards = !(dollar && n == ROOT);
            // (Most slots on a walk are empty: no call for them.)
            if wildcards && !node.multi.is_empty() {
                f(&mut node.multi);
            }
            if pos == END {
                if !node.here.is_empty() {
                    f(&mut node.here);
                }
                continue;
            }
            let (level, next) = level_at(topic, pos);
            if wildcards && node.plus != NONE {
                stack.push((node.plus, next));
            }
            if let Some(&c) = node.children.get(level) {
                stack.push((c, next));
            }
        }
        self.stack = stack;
    }

    /// A fresh empty node.
    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(Node::default());
                self.nodes.len() - 1
            }
        }
    }

    /// Returns an (empty) node to the free list, releasing its memory.
    fn release(&mut self, id: NodeId) {
        self.nodes[id] = Node::default();
        self.free.push(id);
    }
}

/// [`RetainedStore::set`] refused a new topic: the store holds its maximum
/// number of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedFull;

impl fmt::Display for RetainedFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the retained-message store is full (raise its max_messages, or clear some)")
    }
}

impl std::error::Error for RetainedFull {}

/// One level of the retained trie.
#[derive(Debug)]
struct RNode<V> {
    /// Children by level, in byte order (so matches come out sorted).
    children: BTreeMap<Box<str>, NodeId>,
    /// The retained message of the topic ending here, with that topic.
    value: Option<(Box<str>, V)>,
}

impl<V> Default for RNode<V> {
    fn default() -> Self {
        RNode {
            children: BTreeMap::new(),
            value: None,
        }
    }
}

/// A step of a filter walk over the retained trie.
#[derive(Debug, Clone, Copy)]
enum Walk {
    /// Match the filter's levels from this byte position on.
    Filter(usize),
    /// The filter is consumed: the node's own message matches.
    Here,
    /// Under a `#`: the node's message and its whole subtree match.
    All,
}

/// Retained messages by topic name, with lookup by filter. `V` is the
/// message.
///
/// At most `max_messages` topics are held. A filter lookup walks only the
/// branches its levels name (`+` and `#` walk every child of their level) and
/// calls back in topic order: level by level, each level in byte order.
#[derive(Debug)]
pub struct RetainedStore<V> {
    nodes: Vec<RNode<V>>,
    free: Vec<NodeId>,
    len: usize,
    max_messages: usize,
    /// Scratch for `remove`: the nodes from the root to the topic's end.
    path: Vec<NodeId>,
}

impl<V> RetainedStore<V> {
    /// An empty store that holds at most `max_messages` messages.
    pub fn new(max_messages: usize) -> Self {
        RetainedStore {
            nodes: vec![RNode::default()],
            free: Vec::new(),
            len: 0,
            max_messages,
            path: Vec::new(),
        }
    }

    /// Stores (or replaces) the retained message of `topic`, returning the
    /// one it replaced; `Err(RetainedFull)` when a new topic would exceed
    /// `max_messages` (replacing an existing topic always works).
    ///
    /// `topic` should be a valid topic name ([`super::topic::valid_topic_name`]);
    /// it is not checked here. Clearing a retained message (an empty
    /// retained `PUBLISH`) is [`remove`](Self::remove).
    pub fn set(&mut self, topic: &str, value: V) -> Result<Option<V>, RetainedFull> {
        if let Some(n) = self.find(topic) {
            if let Some((_, old)) = &mut self.nodes[n].value {
                return Ok(Some(std::mem::replace(old, value)));
            }
        }
        if self.len >= self.max_messages {
            return Err(RetainedFull);
        }
        let mut n = ROOT;
        for level in topic.split('/') {
            n = match self.nodes[n].children.get(level) {
                Some(&c) => c,
                None => {
                    let c = self.alloc();
                    self.nodes[n].children.insert(level.into(), c);
                    c
                }
            };
        }
        self.nodes[n].value = Some((topic.into(), value));
        self.len += 1;
        Ok(None)
    }

    /// Removes the retained message of `topic` and returns it; nodes left
    /// empty are freed.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut path = std::mem::take(&mut self.path);
        path.clear();
        path.push(ROOT);
        let mut n = ROOT;
        for level in topic.split('/') {
            match self.nodes[n].children.get(level) {
                Some(&c) => n = c,
                None => {
                    self.path = path;
                    return None;
                }
            }
            path.push(n);
        }
        let taken = self.nodes[n].value.take();
        if taken.is_some() {
            self.len -= 1;
            for (i, level) in (1..path.len()).rev().zip(topic.rsplit('/')) {
                let child = &self.nodes[path[i]];
                if child.value.is_some() || !child.children.is_empty() {
                    break;
                }
                self.nodes[path[i - 1]].children.remove(level);
                self.release(path[i]);
            }
            if self.node_count() == 0 {
                self.nodes.truncate(1);
                self.nodes.shrink_to_fit();
                self.free = Vec::new();
            }
        }
        self.path = path;
        taken.map(|(_, v)| v)
    }

    /// The retained message of `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let n = self.find(topic)?;
        self.nodes[n].value.as_ref().map(|(_, v)| v)
    }

    /// The number of retained messages held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no retained message is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most messages this store holds.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// The number of trie nodes in use, the root not counted: 0 when empty.
    pub fn node_count(&self) -> usize {
        self.nodes.len() - 1 - self.free.len()
    }

    /// Calls `f(topic, &value)` for every retained message whose topic
    /// matches the plain `filter` (a `$share/g/` prefix must be stripped
    /// first: [`super::topic::Filter::filter`]), in topic order. Topics
    /// starting with `$` are not matched by a filter starting with `+` or
    /// `#`.
    ///
    /// Allocates its walk stack (lookups come with `SUBSCRIBE`s, not with
    /// every `PUBLISH`).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let mut stack = vec![(ROOT, Walk::Filter(0))];
        while let Some((n, step)) = stack.pop() {
            let node = &self.nodes[n];
            // The root's children are first levels; skip `$` ones under wildcards.
            let visible = |level: &str| n != ROOT || !level.starts_with('$');
            match step {
                Walk::Here => {
                    if let Some((t, v)) = &node.value {
                        f(t, v);
                    }
                }
                Walk::All => {
                    if let Some((t, v)) = &node.value {
                        f(t, v);
                    }
                    for (level, &c) in node.children.iter().rev() {
                        if visible(level) {
                            stack.push((c, Walk::All));
                        }
                    }
                }
                Walk::Filter(pos) => {
                    let (level, next) = level_at(filter, pos);
                    let then = if next == END {
                        Walk::Here
                    } else {
                        Walk::Filter(next)
                    };
                    match level {
                        "#" => stack.push((n, Walk::All)),
                        "+" => {
                            for (level, &c) in node.children.iter().rev() {
                                if visible(level) {
                                    stack.push((c, then));
                                }
                            }
                        }
                        _ => {
                            if let Some(&c) = node.children.get(level) {
                                stack.push((c, then));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every retained message as (topic, message), in no particular order
    /// (for persistence snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> + '_ {
        self.nodes
            .iter()
            .filter_map(|n| n.value.as_ref().map(|(t, v)| (&**t, v)))
    }

    /// The node of `topic`, if the trie has its path.
    fn find(&self, topic: &str) -> Option<NodeId> {
        let mut n = ROOT;
        for level in topic.split('/') {
            n = *self.nodes[n].children.get(level)?;
        }
        Some(n)
    }

    /// A fresh empty node.
    fn alloc(&mut self) -> NodeId {
        match self.free.pop() {
            Some(id) => id,
            None => {
                self.nodes.push(RNode::default());
                self.nodes.len() - 1
            }
        }
    }

    /// Returns an (empty) node to the free list, releasing its memory.
    fn release(&mut self, id: NodeId) {
        self.nodes[id] = RNode::default();
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::mqtt::topic::{matches, Filter};

    /// An entry tagged by `id` (in `sub_id`), to tell results apart.
    fn tagged(id: u32) -> SubEntry {
        SubEntry {
            sub_id: Some(id),
            ..SubEntry::new(QoS::AtLeastOnce)
        }
    }

    /// The (key, tag) pairs that `topic` matches, sorted.
    fn hits(t: &mut SubscriptionTable<u32>, topic: &str) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        t.matches(topic, &mut out);
        let mut v: Vec<_> = out.iter().map(|(k, e)| (*k, e.sub_id.unwrap())).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn spec_examples_through_the_table() {
        let filters = [
            "sport/tennis/player1/#", // 0
            "sport/#",                // 1
            "#",                      // 2
            "sport/tennis/+",         // 3
            "sport/+",                // 4
            "+/+",                    // 5
            "/+",                     // 6
            "+",                      // 7
            "+/monitor/Clients",      // 8
            "$SYS/#",                 // 9
            "$SYS/monitor/+",         // 10
            "sport/tennis/player1",   // 11
        ];
        let mut t = SubscriptionTable::new();
        for (i, f) in filters.iter().enumerate() {
            assert!(t.insert(f, 7, tagged(i as u32)));
        }
        assert_eq!(t.len(), 12);
        let tags = |t: &mut SubscriptionTable<u32>, topic| -> Vec<u32> {
            hits(t, topic).into_iter().map(|(_, id)| id).collect()
        };
        assert_eq!(tags(&mut t, "sport/tennis/player1"), [0, 1, 2, 3, 11]);
        assert_eq!(tags(&mut t, "sport/tennis/player1/ranking"), [0, 1, 2]);
        assert_eq!(
            tags(&mut t, "sport/tennis/player1/score/wimbledon"),
            [0, 1, 2]
        );
        assert_eq!(tags(&mut t, "sport/tennis/player2"), [1, 2, 3]);
        assert_eq!(tags(&mut t, "sport"), [1, 2, 7]);
        assert_eq!(tags(&mut t, "sport/"), [1, 2, 4, 5]);
        assert_eq!(tags(&mut t, "/finance"), [2, 5, 6]);
        assert_eq!(tags(&mut t, "finance"), [2, 7]);
        assert_eq!(tags(&mut t, "$SYS/monitor/Clients"), [9, 10]);
        assert_eq!(tags(&mut t, "$SYS"), [9]);
        assert_eq!(tags(&mut t, "a/monitor/Clients"), [2, 8]);
        assert_eq!(tags(&mut t, "a/$SYS"), [2, 5]);
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        let mut t = SubscriptionTable::new();
        assert!(t.insert("a/b/c", 1, tagged(1)));
        assert!(t.insert("a/b/c", 2, tagged(2)));
        assert_eq!(t.node_count(), 3);
        // Same key and filter: replaced, not added.
        assert!(!t.insert("a/b/c", 1, tagged(10)));
        assert_eq!(t.len(), 2);
        assert_eq!(hits(&mut t, "a/b/c"), [(1, 10), (2, 2)]);
        // The same key in a group of the same filter is another subscription.
        assert!(t.insert("$share/g/a/b/c", 1, tagged(11)));
        assert_eq!(t.len(), 3);
        assert_eq!(hits(&mut t, "a/b/c"), [(1, 10), (1, 11), (2, 2)]);
        // Invalid filters are refused, with the reason.
        assert!(!t.insert("a/b#", 1, tagged(0)));
        assert_eq!(
            t.try_insert("a/b#", 1, tagged(0)),
            Err(TopicError::BadWildcard)
        );
        assert_eq!(
            t.try_insert("$share//a", 1, tagged(0)),
            Err(TopicError::BadShare)
        );
        assert_eq!(t.try_insert("x/+/#", 3, tagged(3)), Ok(true));
        assert_eq!(t.len(), 4);
        assert_eq!(t.node_count(), 5);

        assert!(!t.remove("a/b/c", 3));
        assert!(!t.remove("a/b", 1));
        assert!(!t.remove("a/b/c/d", 1));
        assert!(!t.remove("$share/h/a/b/c", 1));
        assert!(!t.remove("a/b#", 1));
        assert!(t.remove("a/b/c", 1));
        assert_eq!(hits(&mut t, "a/b/c"), [(1, 11), (2, 2)]);
        assert!(t.remove("$share/g/a/b/c", 1));
        assert!(t.remove("a/b/c", 2));
        assert_eq!(t.node_count(), 2, "x and its + child remain");
        assert!(t.remove("x/+/#", 3));
        assert_eq!((t.len(), t.node_count(), t.is_empty()), (0, 0, true));
        assert_eq!(hits(&mut t, "a/b/c"), []);
    }

    #[test]
    fn pruning_keeps_shared_prefixes() {
        let mut t = SubscriptionTable::new();
        t.insert("a/b/c", 1, tagged(1));
        t.insert("a/b", 1, tagged(2));
        t.insert("a/+/c", 1, tagged(3));
        t.insert("a/#", 1, tagged(4));
        t.insert("#", 1, tagged(5));
        assert_eq!(t.node_count(), 5); // a, a/b, a/b/c, a/+, a/+/c
        t.remove("a/b/c", 1);
        assert_eq!(t.node_count(), 4);
        assert_eq!(hits(&mut t, "a/b/c"), [(1, 3), (1, 4), (1, 5)]);
        t.remove("a/+/c", 1);
        assert_eq!(t.node_count(), 2);
        t.remove("a/b", 1);
        assert_eq!(t.node_count(), 1, "a holds a/#");
        t.remove("a/#", 1);
        assert_eq!(t.node_count(), 0);
        assert_eq!(hits(&mut t, "a"), [(1, 5)]);
        t.remove("#", 1);
        assert_eq!(hits(&mut t, "a"), []);
        assert_eq!(t.nodes.len(), 1);
    }

    /// A level with more children than the short list holds moves them to
    /// a map: every child is still found, each removal prunes its own.
    #[test]
    fn many_children_of_one_level() {
        let mut t = SubscriptionTable::new();
        let n = FEW_CHILDREN as u32 * 3;
        for i in 0..n {
            t.insert(&format!("dev/{i}/temp"), i, tagged(i));
        }
        assert_eq!(t.node_count(), 1 + 2 * n as usize);
        assert!(matches!(t.nodes[1].children, Children::Many(_)));
        for i in 0..n {
            assert_eq!(hits(&mut t, &format!("dev/{i}/temp")), [(i, i)]);
        }
        assert_eq!(hits(&mut t, &format!("dev/{n}/temp")), []);
        for i in (0..n).step_by(2) {
            assert!(t.remove(&format!("dev/{i}/temp"), i));
        }
        for i in 0..n {
            let want: &[(u32, u32)] = if i % 2 == 0 { &[] } else { &[(i, i)] };
            assert_eq!(hits(&mut t, &format!("dev/{i}/temp")), want, "{i}");
        }
        for i in (1..n).step_by(2) {
            assert!(t.remove(&format!("dev/{i}/temp"), i));
        }
        assert_eq!(t.node_count(), 0);
        // A short list again: removals keep the others findable.
        for i in 0..3 {
            t.insert(&format!("x/{i}"), i, tagged(i));
        }
        t.remove("x/0", 0);
        assert_eq!(hits(&mut t, "x/1"), [(1, 1)]);
        assert_eq!(hits(&mut t, "x/2"), [(2, 2)]);
        assert_eq!(hits(&mut t, "x/0"), []);
    }

    /// A delivery whose member is gone asks for the next one of its group:
    /// the group is found by its whole filter, its turn moves on, and a
    /// group with no one else says so.
    #[test]
    fn the_next_member_of_a_group_stands_in_for_a_gone_one() {
        let mut t = SubscriptionTable::new();
        for k in [1, 2, 3] {
            t.insert("$share/g/jobs/#", k, tagged(k));
        }
        t.insert("$share/h/jobs/+", 7, tagged(7));
        t.insert("jobs/a", 9, tagged(9));
        let mut out = Vec::new();
        t.matches_shared("jobs/a", &mut out);
        let picks: Vec<(u32, &str)> = out.iter().map(|(k, _, f)| (*k, &**f)).collect();
        assert_eq!(picks, [(1, "$share/g/jobs/#"), (7, "$share/h/jobs/+")]);
        // Member 1 turned out gone (and has left): 2 stands in, and the
        // group's next turn is 3's.
        t.remove("$share/g/jobs/#", 1);
        assert_eq!(t.next_in_group("$share/g/jobs/#", 1), Some((2, tagged(2))));
        assert_eq!(hits(&mut t, "jobs/b")[0], (3, 3));
        // Not yet removed: the one after it, wrapping.
        assert_eq!(t.next_in_group("$share/g/jobs/#", 3), Some((2, tagged(2))));
        // The only member, or no such group or filter: none.
        assert_eq!(t.next_in_group("$share/h/jobs/+", 7), None);
        assert_eq!(t.next_in_group("$share/x/jobs/#", 2), None);
        assert_eq!(t.next_in_group("$share/g/other/#", 2), None);
        assert_eq!(t.next_in_group("jobs/a", 9), None);
    }

    #[test]
    fn shared_groups_take_turns() {
        let mut t = SubscriptionTable::new();
        for k in [3, 1, 2] {
            assert!(t.insert("$share/g/sensors/+", k, tagged(k)));
        }
        t.insert("sensors/#", 9, tagged(9));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let h = hits(&mut t, "sensors/t1");
            assert_eq!(h.len(), 2);
            assert_eq!(h[1], (9, 9), "the plain subscriber gets every message");
            seen.push(h[0].0);
        }
        assert_eq!(seen, [1, 2, 3, 1, 2, 3]);

        // A newcomer joins in key order without skipping anyone's turn.
        let next = |t: &mut SubscriptionTable<u32>| {
            let mut out = Vec::new();
            t.matches("sensors/x", &mut out);
            out.iter().find(|(k, _)| *k != 9).unwrap().0
        };
        assert_eq!(next(&mut t), 1);
        t.insert("$share/g/sensors/+", 0, tagged(0));
        assert_eq!([next(&mut t), next(&mut t), next(&mut t)], [2, 3, 0]);
        assert_eq!(next(&mut t), 1);
        // Removing the member whose turn is next passes the turn on.
        t.remove("$share/g/sensors/+", 2);
        assert_eq!([next(&mut t), next(&mut t), next(&mut t)], [3, 0, 1]);
        // Removing the last member in key order while it is next wraps.
        assert_eq!(next(&mut t), 3);
        t.remove("$share/g/sensors/+", 0);
        assert_eq!([next(&mut t), next(&mut t), next(&mut t)], [1, 3, 1]);

        // Two groups of one filter, and a group of another matching filter:
        // one member each.
        t.insert("$share/h/sensors/+", 5, tagged(5));
        t.insert("$share/g/sensors/t1", 6, tagged(6));
        assert_eq!(hits(&mut t, "sensors/t1"), [(3, 3), (5, 5), (6, 6), (9, 9)]);
        assert_eq!(hits(&mut t, "sensors/t2"), [(1, 1), (5, 5), (9, 9)]);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn many_subscribers_of_one_filter() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut keys: Vec<u32> = (0..1_000).collect();
        // Joined in random order, listed in key order.
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.gen_range(0..=i));
        }
        let mut t = SubscriptionTable::new();
        for &k in &keys {
            assert!(t.insert("fleet/cmd/all", k, tagged(k)));
            assert!(t.insert("$share/g/fleet/+/all", k, tagged(k)));
        }
        assert!(!t.insert("fleet/cmd/all", 500, tagged(7)));
        let mut out = Vec::new();
        t.matches("fleet/cmd/all", &mut out);
        assert_eq!(out.len(), 1_001);
        let plain: Vec<u32> = out[..1_000].iter().map(|(k, _)| *k).collect();
        assert_eq!(plain, (0..1_000).collect::<Vec<_>>());
        assert_eq!(out[500].1.sub_id, Some(7));
        // The topic also matches the group's filter: its first member's turn.
        assert_eq!(out[1_000].0, 0);
        // The group's turns go round in key order, here across 1,000 members.
        let turns = |t: &mut SubscriptionTable<u32>, n: usize| -> Vec<u32> {
            (0..n)
                .map(|_| {
                    let mut out = Vec::new();
                    t.matches("fleet/x/all", &mut out);
                    assert_eq!(out.len(), 1);
                    out[0].0
                })
                .collect()
        };
        assert_eq!(turns(&mut t, 3), [1, 2, 3]);
        // Remove all but 3, 10, 20 and 30: the turns go on after the last one
        // served, whatever was removed (and the group shrinks back to a vector).
        for &k in &keys {
            if ![3, 10, 20, 30].contains(&k) {
                assert!(t.remove("$share/g/fleet/+/all", k));
                assert!(t.remove("fleet/cmd/all", k));
            }
        }
        assert_eq!(turns(&mut t, 5), [10, 20, 30, 3, 10]);
        let mut out = Vec::new();
        t.matches("fleet/cmd/all", &mut out);
        let plain: Vec<u32> = out.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            plain,
            [3, 10, 20, 30, 20],
            "the 4 plain ones, and 20's turn"
        );
        // Growing again past the vector's limit keeps the turn.
        for k in 100..200 {
            t.insert("$share/g/fleet/+/all", k, tagged(k));
        }
        assert_eq!(turns(&mut t, 5), [30, 100, 101, 102, 103]);
        assert_eq!(t.len(), 8 + 100);
    }

    #[test]
    fn dollar_topics_skip_leading_wildcards_in_groups_too() {
        let mut t = SubscriptionTable::new();
        t.insert("$share/g/#", 1, tagged(1));
        t.insert("$share/g/+/x", 2, tagged(2));
        t.insert("$share/g/$SYS/+", 3, tagged(3));
        assert_eq!(hits(&mut t, "$SYS/x"), [(3, 3)]);
        assert_eq!(hits(&mut t, "SYS/x"), [(1, 1), (2, 2)]);
    }

    #[test]
    fn a_very_deep_filter_neither_recurses_nor_leaks() {
        let deep = vec!["a"; 30_000].join("/");
        let mut t = SubscriptionTable::new();
        t.insert(&deep, 1, tagged(1));
        let deep_plus = format!("{}/+", vec!["+"; 29_999].join("/"));
        t.insert(&deep_plus, 2, tagged(2));
        assert_eq!(t.node_count(), 60_000);
        assert_eq!(hits(&mut t, &deep), [(1, 1), (2, 2)]);
        assert!(t.remove(&deep, 1));
        assert!(t.remove(&deep_plus, 2));
        assert_eq!(t.node_count(), 0);
    }

    /// Random filter or topic levels from a small alphabet, so that they
    /// collide often; `$s` is a first level of `$`-topics.
    const ALPHABET: [&str; 6] = ["a", "b", "c", "", "$s", "sport"];

    fn random_filter(rng: &mut StdRng) -> String {
        let n = rng.gen_range(1..=4);
        let mut levels = Vec::new();
        for i in 0..n {
            let r = rng.gen_range(0..100);
            levels.push(if i == n - 1 && r < 12 {
                "#"
            } else if r < 30 {
                "+"
            } else {
                ALPHABET[rng.gen_range(0..ALPHABET.len())]
            });
        }
        let f = levels.join("/");
        if rng.gen_range(0..5) == 0 {
            format!("$share/g{}/{f}", rng.gen_range(0..2))
        } else {
            f
        }
    }

    fn random_topic(rng: &mut StdRng) -> String {
        let n = rng.gen_range(1..=5);
        (0..n)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn agrees_with_the_reference_on_random_cases() {
        let mut rng = StdRng::seed_from_u64(0x4d515454);
        let mut t = SubscriptionTable::new();
        // The model: (filter as subscribed, key, tag).
        let mut model: Vec<(String, u32, u32)> = Vec::new();
        let mut tag = 0;
        let mut shared_hits = 0;
        for case in 0..10_000 {
            // Churn: mostly grow to a few hundred subscriptions, then hover.
            if model.len() < 300 || rng.gen_bool(0.5) {
                let f = random_filter(&mut rng);
                let key = rng.gen_range(0..8);
                tag += 1;
                let new = t.insert(&f, key, tagged(tag));
                if parse_filter(&f).is_err() {
                    // "" and "$share/g0/" are generated now and then.
                    assert!(!new);
                } else {
                    match model.iter_mut().find(|(mf, mk, _)| *mf == f && *mk == key) {
                        Some(m) => {
                            assert!(!new);
                            m.2 = tag;
                        }
                        None => {
                            assert!(new);
                            model.push((f, key, tag));
                        }
                    }
                }
            }
            if !model.is_empty() && rng.gen_bool(0.4) {
                let (f, key, _) = model.swap_remove(rng.gen_range(0..model.len()));
                assert!(t.remove(&f, key));
            }
            assert_eq!(t.len(), model.len());

            let topic = random_topic(&mut rng);
            let got = hits(&mut t, &topic);
            let mut want = Vec::new();
            let mut groups: Vec<(&str, &str)> = Vec::new();
            for (f, key, tag) in &model {
                match parse_filter(f).unwrap() {
                    Filter::Plain(p) => {
                        if matches(p, &topic) {
                            want.push((*key, *tag));
                        }
                    }
                    Filter::Shared { group, filter } => {
                        if matches(filter, &topic) && !groups.contains(&(group, filter)) {
                            groups.push((group, filter));
                        }
                    }
                }
            }
            // Plain matches exactly; then one member of each matching group.
            want.sort_unstable();
            let (got_plain, got_shared): (Vec<_>, Vec<_>) =
                got.iter().partition(|h| want.binary_search(h).is_ok());
            assert_eq!(got_plain, want, "case {case}, {topic}");
            assert_eq!(got.len(), want.len() + groups.len(), "case {case}, {topic}");
            let mut got_groups: Vec<(&str, &str)> = got_shared
                .iter()
                .map(|&(key, tag)| {
                    let (f, k, _) = model.iter().find(|m| m.2 == tag).expect("a known tag");
                    assert_eq!(*k, key);
                    match parse_filter(f).unwrap() {
                        Filter::Shared { group, filter } => (group, filter),
                        Filter::Plain(p) => panic!("case {case}: plain {p} not expected"),
                    }
                })
                .collect();
            got_groups.sort_unstable();
            groups.sort_unstable();
            assert_eq!(got_groups, groups, "case {case}, {topic}");
            shared_hits += groups.len();
        }
        // The random cases did exercise groups.
        assert!(shared_hits > 1_000, "{shared_hits}");
        for (f, key, _) in model.drain(..) {
            assert!(t.remove(&f, key));
        }
        assert_eq!((t.len(), t.node_count()), (0, 0));
    }

    #[test]
    fn a_million_insert_remove_cycles_leave_no_node() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut t = SubscriptionTable::new();
        let mut live: Vec<(String, u32)> = Vec::new();
        let mut peak_arena = 0;
        for _ in 0..1_000_000 {
            if live.len() < 64 {
                let f = random_filter(&mut rng);
                let key = rng.gen_range(0..4);
                if t.insert(&f, key, tagged(0)) {
                    live.push((f, key));
                }
            } else {
                let (f, key) = live.swap_remove(rng.gen_range(0..live.len()));
                assert!(t.remove(&f, key));
            }
            peak_arena = peak_arena.max(t.nodes.len());
        }
        // 64 subscriptions of at most 4 levels never need more than 256 nodes:
        // freed nodes are reused.
        assert!(peak_arena <= 257, "{peak_arena}");
        for (f, key) in live {
            assert!(t.remove(&f, key));
        }
        assert_eq!((t.len(), t.node_count(), t.nodes.len()), (0, 0, 1));
    }

    /// The topics `filter` finds in `r`, in callback order.
    fn found(r: &RetainedStore<u32>, filter: &str) -> Vec<String> {
        let mut v = Vec::new();
        r.for_each_match(filter, |t, _| v.push(t.to_string()));
        v
    }

    #[test]
    fn retained_set_get_replace_remove() {
        let mut r = RetainedStore::new(3);
        assert_eq!(r.set("a/b", 1), Ok(None));
        assert_eq!(r.set("a", 2), Ok(None));
        assert_eq!(r.set("a/b", 3), Ok(Some(1)));
        assert_eq!(r.set("c//", 4), Ok(None));
        assert_eq!((r.len(), r.node_count()), (3, 5));
        // Full: a new topic is refused, an existing one still replaced.
        assert_eq!(r.set("d", 5), Err(RetainedFull));
        assert_eq!(r.set("a/b/c", 5), Err(RetainedFull));
        assert_eq!(r.set("a", 6), Ok(Some(2)));
        assert_eq!(r.node_count(), 5, "the refused set left no node");
        assert_eq!(
            (r.get("a/b"), r.get("a"), r.get("c//")),
            (Some(&3), Some(&6), Some(&4))
        );
        assert_eq!(
            (r.get("a/"), r.get("c"), r.get("c/"), r.get("x")),
            (None, None, None, None)
        );
        let mut all: Vec<_> = r.iter().map(|(t, v)| (t.to_string(), *v)).collect();
        all.sort();
        assert_eq!(all, [("a".into(), 6), ("a/b".into(), 3), ("c//".into(), 4)]);

        assert_eq!(r.remove("c/"), None);
        assert_eq!(r.remove("a/b/c"), None);
        assert_eq!(r.remove("c//"), Some(4));
        assert_eq!((r.len(), r.node_count()), (2, 2));
        assert_eq!(r.remove("a"), Some(6));
        assert_eq!((r.len(), r.node_count()), (1, 2), "a/b keeps a");
        assert_eq!(r.set("d", 5), Ok(None));
        assert_eq!(r.remove("a/b"), Some(3));
        assert_eq!(r.remove("d"), Some(5));
        assert_eq!((r.len(), r.node_count(), r.is_empty()), (0, 0, true));
        assert_eq!(r.nodes.len(), 1);
        assert_eq!(r.iter().count(), 0);
        assert_eq!(RetainedStore::<u32>::new(0).set("a", 1), Err(RetainedFull));
        assert_eq!(
            RetainedFull.to_string(),
            "the retained-message store is full (raise its max_messages, or clear some)"
        );
    }

    #[test]
    fn retained_lookup_by_filter() {
        let mut r = RetainedStore::new(100);
        let topics = [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
            "sport/tennis/player2",
            "sport",
            "sport/",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "$SYS",
            "a/$x",
        ];
        for (i, t) in topics.iter().enumerate() {
            r.set(t, i as u32).unwrap();
        }
        assert_eq!(
            found(&r, "sport/tennis/player1/#"),
            [
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(
            found(&r, "sport/#"),
            [
                "sport",
                "sport/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2"
            ]
        );
        assert_eq!(
            found(&r, "#"),
            [
                "/finance",
                "a/$x",
                "finance",
                "sport",
                "sport/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2"
            ]
        );
        assert_eq!(
            found(&r, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(found(&r, "sport/+"), ["sport/"]);
        assert_eq!(found(&r, "+/+"), ["/finance", "a/$x", "sport/"]);
        assert_eq!(found(&r, "/+"), ["/finance"]);
        assert_eq!(found(&r, "+"), ["finance", "sport"]);
        assert_eq!(found(&r, "+/monitor/Clients"), Vec::<String>::new());
        assert_eq!(found(&r, "$SYS/#"), ["$SYS", "$SYS/monitor/Clients"]);
        assert_eq!(found(&r, "$SYS/monitor/+"), ["$SYS/monitor/Clients"]);
        assert_eq!(found(&r, "+/tennis/#").len(), 4);
        assert_eq!(found(&r, "sport/tennis/player1"), ["sport/tennis/player1"]);
        assert_eq!(found(&r, "sport/tennis"), Vec::<String>::new());
        assert_eq!(found(&r, "nothing/#"), Vec::<String>::new());
        let mut values = Vec::new();
        r.for_each_match("/+", |_, v| values.push(*v));
        assert_eq!(values, [6]);
    }

    #[test]
    fn retained_agrees_with_the_reference_and_prunes() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut r = RetainedStore::new(10_000);
        let mut model: Vec<String> = Vec::new();
        for _ in 0..400 {
            let t = random_topic(&mut rng);
            if r.set(&t, 0).unwrap().is_none() {
                model.push(t);
            }
        }
        assert_eq!(r.len(), model.len());
        // Expected order: level by level, each level in byte order.
        model.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        let mut total = 0;
        for case in 0..2_000 {
            let f = random_filter(&mut rng);
            let Ok(Filter::Plain(f)) = parse_filter(&f) else {
                continue;
            };
            let want: Vec<String> = model.iter().filter(|t| matches(f, t)).cloned().collect();
            assert_eq!(found(&r, f), want, "case {case}, {f}");
            total += want.len();
        }
        assert!(total > 10_000, "{total}");
        for t in &model {
            assert_eq!(r.remove(t), Some(0));
        }
        assert_eq!((r.len(), r.node_count()), (0, 0));
    }

    #[test]
    fn a_very_deep_retained_topic() {
        let deep = vec!["a"; 30_000].join("/");
        let mut r = RetainedStore::new(2);
        r.set(&deep, 1).unwrap();
        assert_eq!(found(&r, "#"), std::slice::from_ref(&deep));
        assert_eq!(found(&r, &deep), std::slice::from_ref(&deep));
        assert_eq!(r.remove(&deep), Some(1));
        assert_eq!(r.node_count(), 0);
        // Dropping a deep store does not recurse either.
        r.set(&deep, 2).unwrap();
        drop(r);
    }
}
