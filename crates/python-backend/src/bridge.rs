//! The bridge script every worker runs, shipped inside the crate so a pool
//! needs nothing installed on the Python side.
//!
//! `bridge.py` does not define its error kinds, exit codes or wire
//! constants: [`script`] puts in front of it three Python classes,
//! `ErrorKind` and `BridgeExit`, made from the tables in `protocol.rs`, and
//! `Wire` (the protocol version, the frame word's attachments flag, the
//! placeholder key, the shared-memory layout). The names and values therefore exist once, and the
//! tests below check that the script uses exactly those names.

use std::fmt::Write;
use std::sync::LazyLock;

use crate::attach;
use crate::exits::BridgeExit;
use crate::frame::{ATTACHMENTS_FLAG, DESCRIPTOR_LEN, SHARED_FLAG};
use crate::protocol::{ErrorKind, PROTOCOL};

/// The script as written; not runnable until the tables are put in front.
const SOURCE: &str = include_str!("bridge.py");

/// The Python source the interpreter runs with `-c`: the tables, then
/// `bridge.py`. Its command line is
/// `<handler> <max frame size> <host pid>`.
pub fn script() -> &'static str {
    static SCRIPT: LazyLock<String> = LazyLock::new(|| tables() + SOURCE);
    &SCRIPT
}

/// The Python definitions of the protocol tables.
fn tables() -> String {
    let mut out = String::from("# Generated from protocol.rs by bridge.rs.\nclass ErrorKind:\n");
    for kind in ErrorKind::ALL {
        let name = kind.as_str();
        let _ = writeln!(out, "    {} = {name:?}", name.to_ascii_uppercase());
    }
    out.push_str("class BridgeExit:\n");
    for exit in BridgeExit::ALL {
        let _ = writeln!(out, "    {} = {}", exit.name(), exit.code());
    }
    let _ = write!(
        out,
        "class Wire:\n    PROTOCOL = {PROTOCOL}\n    ATTACHMENTS_FLAG = {ATTACHMENTS_FLAG}\n    PLACEHOLDER = {:?}\n    ITEM_ERROR = {:?}\n    SHARED_FLAG = {SHARED_FLAG}\n    DESCRIPTOR_LEN = {DESCRIPTOR_LEN}\n    SHM_HEADER = {}\n    SHM_ALIGN = {}\n    SHM_GRAIN = {}\n",
        attach::BYTES.name(),
        crate::reply::ITEM_ERROR,
        crate::shm::HEADER,
        crate::shm::ALIGN,
        crate::shm::GRAIN,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The `NAME`s the script uses as `<class>.NAME`.
    fn used(class: &str) -> BTreeSet<String> {
        let prefix = format!("{class}.");
        SOURCE
            .match_indices(&prefix)
            .map(|(at, _)| {
                SOURCE[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_script_sends_exactly_the_kinds_of_the_table() {
        let table: BTreeSet<String> = ErrorKind::ALL
            .iter()
            .map(|k| k.as_str().to_ascii_uppercase())
            .collect();
        assert_eq!(used("ErrorKind"), table);
        // ... and never spells one out, which would bypass the table.
        for kind in ErrorKind::ALL {
            for quoted in [
                format!("\"{}\"", kind.as_str()),
                format!("'{}'", kind.as_str()),
            ] {
                assert!(!SOURCE.contains(&quoted), "bridge.py spells {quoted}");
            }
        }
    }

    #[test]
    fn the_script_exits_exactly_with_the_codes_of_the_table() {
        let table: BTreeSet<String> = BridgeExit::ALL.iter().map(|e| e.name().into()).collect();
        assert_eq!(used("BridgeExit"), table);
        // Every exit the script makes (outside comments) names its code.
        let code = SOURCE.lines().filter(|l| !l.trim_start().starts_with('#'));
        for line in code {
            for call in ["_exit(", "sys.exit("] {
                for (at, _) in line.match_indices(call) {
                    assert!(
                        line[at + call.len()..].starts_with("BridgeExit."),
                        "an exit without a named code: {line}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_tables_come_first_and_define_every_name() {
        let script = script();
        assert!(script.ends_with(SOURCE));
        let head = &script[..script.len() - SOURCE.len()];
        assert!(head.contains("    BAD_ARGS = \"bad_args\"\n"), "{head}");
        assert!(head.contains("    PARENT_GONE = 75\n"), "{head}");
        assert!(
            head.contains("    PLACEHOLDER = \"$cenote_bytes\"\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("    PROTOCOL = {PROTOCOL}\n")),
            "{head}"
        );
        assert!(
            head.contains("    ITEM_ERROR = \"$cenote_error\"\n"),
            "{head}"
        );
        assert!(head.contains("    DESCRIPTOR_LEN = 16\n"), "{head}");
        assert_eq!(
            head.lines().count(),
            13 + ErrorKind::ALL.len() + BridgeExit::ALL.len()
        );
    }
}
