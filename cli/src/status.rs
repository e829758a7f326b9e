// SPDX-License-Identifier: MIT OR Apache-2.0
//! `enoki status`: reads Enoki-C's sysfs files. Absent files are `None`
//! (shown as `-`), so the tool works against older or partial kernels.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use serde::{Serialize, Serializer};

use crate::hints::Hints;
use crate::Error;

/// One per-message counter from the `counters` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub name: String,
    pub value: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub scheduler: Option<String>,
    pub module: Option<String>,
    pub mode: Option<String>,
    /// none | enabled | ejected
    pub state: Option<String>,
    pub nr_tasks: Option<u64>,
    pub pick_errors: Option<u64>,
    pub balance_errors: Option<u64>,
    pub rejected: Option<u64>,
    pub last_exit: Option<String>,
    /// Live upgrades since boot, and how long the last one and the
    /// longest one held every call off (ns).
    pub upgrades: Option<Upgrades>,
    /// Hint queues and what became of their hints.
    pub hints: Option<Hints>,
    /// In the kernel's order; a JSON object.
    #[serde(serialize_with = "counters_as_map")]
    pub counters: Option<Vec<Counter>>,
}

fn counters_as_map<S: Serializer>(c: &Option<Vec<Counter>>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        None => s.serialize_none(),
        Some(v) => s.collect_map(v.iter().map(|c| (&c.name, c.value))),
    }
}

/// The `upgrades` file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Upgrades {
    pub upgrades: u64,
    pub blackout_last_ns: u64,
    pub blackout_max_ns: u64,
}

impl Upgrades {
    fn from_counters(path: &Path, counters: &[Counter]) -> Result<Self, Error> {
        let get = |name: &str| {
            counters
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.value)
                .ok_or_else(|| Error::Malformed {
                    path: path.into(),
                    msg: format!("no {name}"),
                })
        };
        Ok(Upgrades {
            upgrades: get("upgrades")?,
            blackout_last_ns: get("blackout_last_ns")?,
            blackout_max_ns: get("blackout_max_ns")?,
        })
    }
}

impl fmt::Display for Upgrades {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.upgrades)?;
        if self.upgrades > 0 {
            write!(
                f,
                " (calls held off {:.1} us last, {:.1} us at most)",
                self.blackout_last_ns as f64 / 1e3,
                self.blackout_max_ns as f64 / 1e3
            )?;
        }
        Ok(())
    }
}

/// Reads `dir/name` trimmed; `None` when absent or empty (sysfs files of
/// unset strings are empty, which means the same thing).
pub(crate) fn read_attr(dir: &Path, name: &str) -> Result<Option<String>, Error> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim();
            Ok((!s.is_empty()).then(|| s.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(crate) fn read_number(dir: &Path, name: &str) -> Result<Option<u64>, Error> {
    read_attr(dir, name)?
        .map(|s| {
            s.parse().map_err(|_| Error::Malformed {
                path: dir.join(name),
                msg: format!("expected a number, found '{s}'"),
            })
        })
        .transpose()
}

fn parse_counters(path: &Path, text: &str) -> Result<Vec<Counter>, Error> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (name, value) = match (words.next(), words.next(), words.next()) {
            (None, ..) => continue,
            (Some(name), Some(value), None) => (name, value),
            _ => {
                return Err(Error::Malformed {
                    path: path.into(),
                    msg: format!("line {}: expected 'name value', found '{line}'", i + 1),
                })
            }
        };
        let value = value.parse().map_err(|_| Error::Malformed {
            path: path.into(),
            msg: format!("line {}: '{value}' is not a number", i + 1),
        })?;
        out.push(Counter {
            name: name.into(),
            value,
        });
    }
    Ok(out)
}

impl Status {
    /// Reads every status file of `dir` (normally `/sys/kernel/enoki`).
    /// Only a missing `dir` is an error, meaning the kernel has no Enoki;
    /// a malformed number is one too, as it means the tool and the kernel
    /// disagree.
    pub fn read(dir: &Path) -> Result<Status, Error> {
        if !dir.is_dir() {
            return Err(Error::NoEnoki(dir.into()));
        }
        let counters_path = dir.join("counters");
        let counters = match std::fs::read_to_string(&counters_path) {
            Ok(text) => Some(parse_counters(&counters_path, &text)?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(counters_path, e)),
        };
        let upgrades_path = dir.join("upgrades");
        let upgrades = match std::fs::read_to_string(&upgrades_path) {
            Ok(text) => Some(Upgrades::from_counters(
                &upgrades_path,
                &parse_counters(&upgrades_path, &text)?,
            )?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(upgrades_path, e)),
        };
        let hints_path = dir.join("hints");
        let hints = match std::fs::read_to_string(&hints_path) {
            Ok(text) => Some(Hints::parse(&hints_path, &text)?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(hints_path, e)),
        };
        Ok(Status {
            scheduler: read_attr(dir, "scheduler")?,
            module: read_attr(dir, "module")?,
            mode: read_attr(dir, "mode")?,
            state: read_attr(dir, "state")?,
            nr_tasks: read_number(dir, "nr_tasks")?,
            pick_errors: read_number(dir, "pick_errors")?,
            balance_errors: read_number(dir, "balance_errors")?,
            rejected: read_number(dir, "rejected")?,
            last_exit: read_attr(dir, "last_exit")?,
            upgrades,
            hints,
            counters,
        })
    }
}

/// `-` for a file the kernel does not provide.
fn cell<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

/// The human table: one `name value` row per file, counters indented below.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("scheduler", cell(&self.scheduler)),
            ("module", cell(&self.module)),
            ("mode", cell(&self.mode)),
            ("state", cell(&self.state)),
            ("nr_tasks", cell(&self.nr_tasks)),
            ("pick_errors", cell(&self.pick_errors)),
            ("balance_errors", cell(&self.balance_errors)),
            ("rejected", cell(&self.rejected)),
            ("last_exit", cell(&self.last_exit)),
            ("upgrades", cell(&self.upgrades)),
            ("hints", cell(&self.hints)),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<15} {value}")?;
        }
        let Some(counters) = &self.counters else {
            return writeln!(f, "{:<15} -", "counters");
        };
        writeln!(f, "counters")?;
        let width = counters.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in counters {
            writeln!(f, "  {:<width$} {}", c.name, c.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    fn full_dir() -> TempDir {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        for (name, text) in [
            ("scheduler", "fifo\n"),
            ("module", "enoki_fifo\n"),
            ("mode", "all\n"),
            ("state", "enabled\n"),
            ("nr_tasks", "12\n"),
            ("pick_errors", "0\n"),
            ("balance_errors", "3\n"),
            ("rejected", "1\n"),
            ("last_exit", "\n"),
            ("counters", "enqueue 120\npick_next 340\n\ntask_dead   7\n"),
            (
                "upgrades",
                "upgrades 2\nblackout_last_ns 1500\nblackout_max_ns 2250\n",
            ),
            (
                "hints",
                "queues 1\nhints taken 4 size 0 task 0 outside 0 permission 1 refused 0 gone 0\n\
                 queue 2 owner 99 taken 4 size 0 task 0 outside 0 permission 1 refused 0 gone 0\n",
            ),
        ] {
            fs::write(d.join(name), text).unwrap();
        }
        tmp
    }

    #[test]
    fn reads_all_files() {
        let tmp = full_dir();
        let s = Status::read(tmp.path()).unwrap();
        assert_eq!(s.scheduler.as_deref(), Some("fifo"));
        assert_eq!(s.module.as_deref(), Some("enoki_fifo"));
        assert_eq!(s.mode.as_deref(), Some("all"));
        assert_eq!(s.state.as_deref(), Some("enabled"));
        assert_eq!(s.nr_tasks, Some(12));
        assert_eq!(s.pick_errors, Some(0));
        assert_eq!(s.balance_errors, Some(3));
        assert_eq!(s.rejected, Some(1));
        assert_eq!(s.last_exit, None);
        assert_eq!(
            s.upgrades,
            Some(Upgrades {
                upgrades: 2,
                blackout_last_ns: 1500,
                blackout_max_ns: 2250
            })
        );
        assert_eq!(
            s.upgrades.unwrap().to_string(),
            "2 (calls held off 1.5 us last, 2.2 us at most)"
        );
        let names: Vec<_> = s
            .counters
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["enqueue", "pick_next", "task_dead"]);
        assert_eq!(s.counters.unwrap()[2].value, 7);
    }

    #[test]
    fn missing_files_are_none() {
        let tmp = TempDir::new().unwrap();
        fs::write(tmp.path().join("state"), "none\n").unwrap();
        let s = Status::read(tmp.path()).unwrap();
        assert_eq!(
            s,
            Status {
                state: Some("none".into()),
                ..Default::default()
            }
        );
        let table = s.to_string();
        assert!(table.contains("state           none\n"), "{table}");
        assert!(table.contains("scheduler       -\n"), "{table}");
        assert!(table.contains("counters        -\n"), "{table}");
    }

    #[test]
    fn missing_dir_means_no_enoki() {
        let tmp = TempDir::new().unwrap();
        let err = Status::read(&tmp.path().join("enoki")).unwrap_err();
        assert!(matches!(err, Error::NoEnoki(_)));
    }

    #[test]
    fn malformed_numbers_name_the_file() {
        let tmp = TempDir::new().unwrap();
        fs::write(tmp.path().join("nr_tasks"), "lots\n").unwrap();
        let msg = Status::read(tmp.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with("nr_tasks: expected a number, found 'lots'"),
            "{msg}"
        );

        let tmp = TempDir::new().unwrap();
        fs::write(tmp.path().join("counters"), "enqueue 1\nbroken\n").unwrap();
        let msg = Status::read(tmp.path()).unwrap_err().to_string();
        assert!(
            msg.contains("counters: line 2: expected 'name value'"),
            "{msg}"
        );
    }

    #[test]
    fn table() {
        let tmp = full_dir();
        let table = Status::read(tmp.path()).unwrap().to_string();
        let expected = "\
scheduler       fifo
module          enoki_fifo
mode            all
state           enabled
nr_tasks        12
pick_errors     0
balance_errors  3
rejected        1
last_exit       -
upgrades        2 (calls held off 1.5 us last, 2.2 us at most)
hints           1 queues open; 4 taken, 1 refused (permission 1)
  queue 2 (owner 99): 4 taken, 1 refused (permission 1)
counters
  enqueue   120
  pick_next 340
  task_dead 7
";
        assert_eq!(table, expected);
    }

    #[test]
    fn json() {
        let tmp = full_dir();
        let s = Status::read(tmp.path()).unwrap();
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "scheduler": "fifo",
                "module": "enoki_fifo",
                "mode": "all",
                "state": "enabled",
                "nr_tasks": 12,
                "pick_errors": 0,
                "balance_errors": 3,
                "rejected": 1,
                "last_exit": null,
                "upgrades": {"upgrades": 2, "blackout_last_ns": 1500, "blackout_max_ns": 2250},
                "hints": {
                    "open_queues": 1,
                    "hints": {"taken": 4, "size": 0, "task": 0, "outside": 0, "permission": 1,
                              "refused": 0, "gone": 0},
                    "queues": [{"id": 2, "owner": 99, "retired": false, "hints": {
                        "taken": 4, "size": 0, "task": 0, "outside": 0, "permission": 1,
                        "refused": 0, "gone": 0}}],
                },
                "counters": {"enqueue": 120, "pick_next": 340, "task_dead": 7},
            })
        );
        let empty = serde_json::to_value(Status::default()).unwrap();
        assert_eq!(empty["counters"], serde_json::Value::Null);
    }
}
