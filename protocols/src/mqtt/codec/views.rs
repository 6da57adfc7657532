//! The properties that may repeat, as views of their encoded bytes (after
//! a decode, so that nothing is allocated) or as slices (to encode).

use core::fmt;

use super::props::{self, Prop};

/// User Properties (0x26): a view of the encoded properties (after a
/// decode) or name/value pairs to encode. Either way [`UserProps::iter`]
/// gives the pairs in order; two values are equal when their pairs are.
#[derive(Clone, Copy)]
pub enum UserProps<'a> {
    /// Encoded properties as they were received: the stretch of a property
    /// block from the first User Property to the end of the last one (other
    /// properties in between are skipped). Only a decoder's output is read
    /// correctly; anything else ends the iteration early.
    Encoded(&'a [u8]),
    /// Name/value pairs.
    Pairs(&'a [(&'a str, &'a str)]),
}

impl Default for UserProps<'_> {
    fn default() -> Self {
        UserProps::Pairs(&[])
    }
}

impl<'a> UserProps<'a> {
    /// The pairs, in order.
    pub fn iter(&self) -> UserPropsIter<'a> {
        match *self {
            UserProps::Encoded(b) => UserPropsIter::Encoded(b),
            UserProps::Pairs(p) => UserPropsIter::Pairs(p.iter()),
        }
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        match *self {
            UserProps::Encoded(b) => b.is_empty(),
            UserProps::Pairs(p) => p.is_empty(),
        }
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        match *self {
            UserProps::Encoded(_) => self.iter().count(),
            UserProps::Pairs(p) => p.len(),
        }
    }
}

impl PartialEq for UserProps<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UserProps<'_> {}

impl fmt::Debug for UserProps<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of [`UserProps::iter`].
#[derive(Debug, Clone)]
pub enum UserPropsIter<'a> {
    /// Over encoded properties.
    #[doc(hidden)]
    Encoded(&'a [u8]),
    /// Over pairs.
    #[doc(hidden)]
    Pairs(core::slice::Iter<'a, (&'a str, &'a str)>),
}

impl<'a> Iterator for UserPropsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        match self {
            UserPropsIter::Pairs(p) => p.next().copied(),
            UserPropsIter::Encoded(b) => loop {
                match props::next_prop(b) {
                    Some(Prop::User(k, v)) => return Some((k, v)),
                    Some(_) => continue,
                    None => {
                        *b = &[];
                        return None;
                    }
                }
            },
        }
    }
}

/// The Subscription Identifiers (0x0B) of a PUBLISH, the same way as
/// [`UserProps`]: a view of the encoded properties or a list of values.
#[derive(Clone, Copy)]
pub enum SubIds<'a> {
    /// Encoded properties as they were received: from the first
    /// Subscription Identifier to the end of the last one.
    Encoded(&'a [u8]),
    /// The identifiers.
    List(&'a [u32]),
}

impl Default for SubIds<'_> {
    fn default() -> Self {
        SubIds::List(&[])
    }
}

impl<'a> SubIds<'a> {
    /// The identifiers, in order.
    pub fn iter(&self) -> SubIdsIter<'a> {
        match *self {
            SubIds::Encoded(b) => SubIdsIter::Encoded(b),
            SubIds::List(l) => SubIdsIter::List(l.iter()),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        match *self {
            SubIds::Encoded(b) => b.is_empty(),
            SubIds::List(l) => l.is_empty(),
        }
    }
}

impl PartialEq for SubIds<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SubIds<'_> {}

impl fmt::Debug for SubIds<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of [`SubIds::iter`].
#[derive(Debug, Clone)]
pub enum SubIdsIter<'a> {
    /// Over encoded properties.
    #[doc(hidden)]
    Encoded(&'a [u8]),
    /// Over a list.
    #[doc(hidden)]
    List(core::slice::Iter<'a, u32>),
}

impl Iterator for SubIdsIter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        match self {
            SubIdsIter::List(l) => l.next().copied(),
            SubIdsIter::Encoded(b) => loop {
                match props::next_prop(b) {
                    Some(Prop::SubId(id)) => return Some(id),
                    Some(_) => continue,
                    None => {
                        *b = &[];
                        return None;
                    }
                }
            },
        }
    }
}
