// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `hints` status file: open hint queues, and what became of hints,
//! for all queues since boot and per open queue.

use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::Error;

/// What became of some hints: `taken`, then one count per refusal reason,
/// in the kernel's order; a JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes(pub Vec<(String, u64)>);

impl Serialize for Outcomes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, v)| (n, v)))
    }
}

impl Outcomes {
    /// The count named `name` (0 if the kernel has no such reason).
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Every refusal, whatever the reason.
    pub fn refused(&self) -> u64 {
        self.0
            .iter()
            .filter(|(n, _)| n != "taken")
            .map(|(_, v)| v)
            .sum()
    }

    /// `name value` pairs, as the kernel writes them after a line's key.
    fn parse(words: &[&str]) -> Option<Self> {
        words
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => Some((name.to_string(), value.parse().ok()?)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Outcomes)
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} taken, {} refused", self.get("taken"), self.refused())?;
        let reasons: Vec<String> = self
            .0
            .iter()
            .filter(|(n, v)| n != "taken" && *v > 0)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        Ok(())
    }
}

/// One open queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub id: u32,
    /// The thread that opened it.
    pub owner: i32,
    /// Its scheduler was replaced by one with other hints.
    pub retired: bool,
    pub hints: Outcomes,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hints {
    pub open_queues: u64,
    /// Every queue's hints since boot.
    pub hints: Outcomes,
    pub queues: Vec<Queue>,
}

impl Hints {
    /// Parses the file's `text` (read from `path`, named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let mut out = Hints::default();
        for (i, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let parsed = match words.as_slice() {
                [] => Some(()),
                ["queues", n] => n.parse().ok().map(|n| out.open_queues = n),
                ["hints", rest @ ..] => Outcomes::parse(rest).map(|h| out.hints = h),
                ["queue", id, "owner", owner, rest @ ..] => {
                    Self::queue(id, owner, rest).map(|q| out.queues.push(q))
                }
                _ => None,
            };
            parsed.ok_or_else(|| Error::Malformed {
                path: path.into(),
                msg: format!("line {}: cannot read '{line}'", i + 1),
            })?;
        }
        Ok(out)
    }

    fn queue(id: &str, owner: &str, rest: &[&str]) -> Option<Queue> {
        let (retired, counts) = match rest {
            ["retired", counts @ ..] => (true, counts),
            counts => (false, counts),
        };
        Some(Queue {
            id: id.parse().ok()?,
            owner: owner.parse().ok()?,
            retired,
            hints: Outcomes::parse(counts)?,
        })
    }
}

impl fmt::Display for Hints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} queues open; {}", self.open_queues, self.hints)?;
        for q in &self.queues {
            let retired = if q.retired { ", retired" } else { "" };
            write!(
                f,
                "\n  queue {} (owner {}{retired}): {}",
                q.id, q.owner, q.hints
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "queues 2\n\
        hints taken 5 size 0 task 1 outside 0 permission 2 refused 0 gone 0\n\
        queue 3 owner 120 taken 5 size 0 task 1 outside 0 permission 0 refused 0 gone 0\n\
        queue 7 owner 130 retired taken 0 size 0 task 0 outside 0 permission 2 refused 0 gone 0\n";

    #[test]
    fn reads_queues_and_reasons() {
        let h = Hints::parse(Path::new("hints"), FILE).unwrap();
        assert_eq!(h.open_queues, 2);
        assert_eq!((h.hints.get("taken"), h.hints.refused()), (5, 3));
        assert_eq!(h.queues.len(), 2);
        assert_eq!(
            (h.queues[1].id, h.queues[1].owner, h.queues[1].retired),
            (7, 130, true)
        );
        assert_eq!(h.queues[1].hints.get("permission"), 2);
        assert_eq!(
            h.to_string(),
            "2 queues open; 5 taken, 3 refused (task 1, permission 2)\n  \
             queue 3 (owner 120): 5 taken, 1 refused (task 1)\n  \
             queue 7 (owner 130, retired): 0 taken, 2 refused (permission 2)"
        );
    }

    #[test]
    fn a_line_it_cannot_read_names_the_file_and_line() {
        let msg = Hints::parse(Path::new("hints"), "queues 1\nhints taken x\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("hints: line 2: cannot read 'hints taken x'"),
            "{msg}"
        );
    }
}
