//! [`BridgeExit`]: the exit codes of the bridge, a table both sides share
//! (`bridge.rs` hands it to the script), so a worker's exit can be named in
//! the errors a caller sees.

/// The bridge's exit codes. The bridge exits only with these
/// (`os._exit(BridgeExit.PARENT_GONE)`); a handler that ends the process
/// itself (`os._exit(n)`, or C code calling `exit`) exits with its own code,
/// so handlers should keep clear of these values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeExit {
    /// Its stdin closed or a shutdown frame arrived: a clean exit.
    Ok = 0,
    /// It was sent a frame over the max frame size, or one whose attachment
    /// table does not fit it.
    Protocol = 65,
    /// The handler module failed to import (the error frame says why).
    ImportFailed = 66,
    /// An exception escaped the bridge: a bug in it, or a `BaseException`
    /// other than `SystemExit` (e.g. `KeyboardInterrupt`) from a handler.
    Internal = 70,
    /// Its host process went away.
    ParentGone = 75,
}

impl BridgeExit {
    /// Every exit, in table order.
    pub const ALL: [BridgeExit; 5] = [
        BridgeExit::Ok,
        BridgeExit::Protocol,
        BridgeExit::ImportFailed,
        BridgeExit::Internal,
        BridgeExit::ParentGone,
    ];

    /// The process exit code.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The name both sides use, e.g. `PARENT_GONE`.
    pub const fn name(self) -> &'static str {
        match self {
            BridgeExit::Ok => "OK",
            BridgeExit::Protocol => "PROTOCOL",
            BridgeExit::ImportFailed => "IMPORT_FAILED",
            BridgeExit::Internal => "INTERNAL",
            BridgeExit::ParentGone => "PARENT_GONE",
        }
    }

    /// What the exit means, for messages.
    pub const fn meaning(self) -> &'static str {
        match self {
            BridgeExit::Ok => "a clean exit",
            BridgeExit::Protocol => {
                "it was sent a frame over the max frame size, or one it could not read past"
            }
            BridgeExit::ImportFailed => "the handler module failed to import",
            BridgeExit::Internal => "an exception escaped the bridge",
            BridgeExit::ParentGone => "its host process went away",
        }
    }

    /// The exit with this code, if the bridge has one.
    pub fn from_code(code: i32) -> Option<BridgeExit> {
        BridgeExit::ALL.into_iter().find(|e| e.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_names_are_distinct() {
        let codes: std::collections::HashSet<_> = BridgeExit::ALL.map(BridgeExit::code).into();
        let names: std::collections::HashSet<_> = BridgeExit::ALL.map(BridgeExit::name).into();
        assert_eq!(codes.len(), BridgeExit::ALL.len());
        assert_eq!(names.len(), BridgeExit::ALL.len());
        for exit in BridgeExit::ALL {
            assert_eq!(BridgeExit::from_code(exit.code()), Some(exit));
        }
        assert_eq!(BridgeExit::from_code(3), None);
    }
}
