//! A plain entry for the strategies' own tests: an id, a priority, and a
//! request that claims one id.

use cenote_core::{Entry, PriorityLevel};

#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    pub id: u32,
    prio: PriorityLevel,
}

impl Item {
    pub fn new(id: u32) -> Self {
        Item { id, prio: 0 }
    }

    pub fn priority(mut self, prio: PriorityLevel) -> Self {
        self.prio = prio;
        self
    }
}

impl Entry for Item {
    /// The id a pop claims, if any.
    type Request<'a> = Option<u32>;

    fn priority(&self) -> PriorityLevel {
        self.prio
    }

    fn claims(req: Option<u32>) -> bool {
        req.is_some()
    }

    fn claimed_by(&self, req: Option<u32>) -> bool {
        req == Some(self.id)
    }
}
