//! Why the agent refuses: one enum, mapped once to the stable codes that audit records,
//! `--json` and the README use. A bundle's own refusals keep the reader's codes.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The bundle reader refused the bytes.
    Bundle(bundle::Code),
    /// The path is a symlink, FIFO, device, directory or socket.
    NotAFile,
    /// The bundle follows another channel than the device.
    WrongChannel,
    /// Its security_version is below the device's floor (or a rollback target's is).
    Rollback,
    SameVersion,
    OlderVersion,
    /// The payload does not fit the inactive slot.
    TooLargeForSlot,
    /// The booted slot is on a trial boot: bless it (or let it fall back) first.
    TrialInProgress,
    /// `mark-good` on a slot that is not on a trial boot (never armed, or an operator's
    /// rollback cancelled it).
    NotOnTrial,
    /// `rollback` with no good slot to go back to.
    NoGoodSlot,
    /// A stick with no bundle this device accepts.
    NoAcceptableBundle,
    /// The slot read back differs from what was written.
    ReadbackMismatch,
    /// Another sideload holds the device.
    Busy,
    /// The audit log's chain is broken (a cut or edited tail).
    AuditBroken,
    /// This very bundle already failed its trial boot on this device (a stick left in would
    /// otherwise install it again and again): `--reinstall` overrides.
    FailedBefore,
    /// A site profile that does not parse, or does not fit this image's zones and conduits.
    BadSiteProfile,
    /// A site profile whose serial is not newer than the one in force.
    SiteRollback,
    /// A site profile of another site than the box's, with no re-siting signed for this box.
    WrongSite,
    /// The firewall compiled from a site profile does not pass `nft -c`.
    RulesetRefused,
}

impl Reason {
    /// Every code the agent can give, bundle codes included.
    pub fn all() -> Vec<Reason> {
        let mut v: Vec<Reason> = bundle::Code::ALL.iter().map(|c| Reason::Bundle(*c)).collect();
        v.extend([
            Reason::NotAFile,
            Reason::WrongChannel,
            Reason::Rollback,
            Reason::SameVersion,
            Reason::OlderVersion,
            Reason::TooLargeForSlot,
            Reason::TrialInProgress,
            Reason::NotOnTrial,
            Reason::NoGoodSlot,
            Reason::NoAcceptableBundle,
            Reason::ReadbackMismatch,
            Reason::Busy,
            Reason::AuditBroken,
            Reason::FailedBefore,
            Reason::BadSiteProfile,
            Reason::SiteRollback,
            Reason::WrongSite,
            Reason::RulesetRefused,
        ]);
        v
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Bundle(c) => c.as_str(),
            Reason::NotAFile => "not-a-file",
            Reason::WrongChannel => "wrong-channel",
            Reason::Rollback => "rollback",
            Reason::SameVersion => "same-version",
            Reason::OlderVersion => "older-version",
            Reason::TooLargeForSlot => "too-large-for-slot",
            Reason::TrialInProgress => "trial-in-progress",
            Reason::NotOnTrial => "not-on-trial",
            Reason::NoGoodSlot => "no-good-slot",
            Reason::NoAcceptableBundle => "no-acceptable-bundle",
            Reason::ReadbackMismatch => "readback-mismatch",
            Reason::Busy => "busy",
            Reason::AuditBroken => "audit-broken",
            Reason::FailedBefore => "failed-before",
            Reason::BadSiteProfile => "bad-site-profile",
            Reason::SiteRollback => "site-rollback",
            Reason::WrongSite => "wrong-site",
            Reason::RulesetRefused => "ruleset-refused",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
