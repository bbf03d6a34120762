//! Why the agent refuses: one enum, mapped once to the stable codes that audit records,
//! `--json` and the README use. A bundle's own refusals keep the reader's codes.

use std::fmt;

/// The agent's own reasons (a bundle's refusals keep the reader's codes, `Reason::Bundle`),
/// declared once with their stable names: `Reason::all()` is generated from this table.
macro_rules! reasons {
    ($($(#[$vmeta:meta])* $variant:ident => $code:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            /// The bundle reader refused the bytes.
            Bundle(bundle::Code),
            $($(#[$vmeta])* $variant,)*
        }

        impl Reason {
            const OWN: &'static [Reason] = &[$(Reason::$variant,)*];

            /// Every code the agent can give, bundle codes included.
            pub fn all() -> Vec<Reason> {
                bundle::Code::ALL.iter().map(|c| Reason::Bundle(*c)).chain(Self::OWN.iter().copied()).collect()
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    Reason::Bundle(c) => c.as_str(),
                    $(Reason::$variant => $code,)*
                }
            }
        }
    };
}

reasons! {
    /// The path is a symlink, FIFO, device, directory or socket.
    NotAFile => "not-a-file",
    /// The bundle follows another channel than the device.
    WrongChannel => "wrong-channel",
    /// Its security_version is below the device's floor (or a rollback target's is).
    Rollback => "rollback",
    SameVersion => "same-version",
    OlderVersion => "older-version",
    /// The payload does not fit the inactive slot.
    TooLargeForSlot => "too-large-for-slot",
    /// The booted slot is on a trial boot: bless it (or let it fall back) first.
    TrialInProgress => "trial-in-progress",
    /// `mark-good` on a slot that is not on a trial boot (never armed, or an operator's
    /// rollback cancelled it).
    NotOnTrial => "not-on-trial",
    /// `rollback` with no good slot to go back to.
    NoGoodSlot => "no-good-slot",
    /// A stick with no bundle this device accepts.
    NoAcceptableBundle => "no-acceptable-bundle",
    /// The slot read back differs from what was written.
    ReadbackMismatch => "readback-mismatch",
    /// Another sideload holds the device.
    Busy => "busy",
    /// The audit log's chain is broken (a cut or edited tail).
    AuditBroken => "audit-broken",
    /// This very bundle already failed its trial boot on this device (a stick left in would
    /// otherwise install it again and again): `--reinstall` overrides.
    FailedBefore => "failed-before",
    /// A site profile that does not parse, or does not fit this image's zones and conduits.
    BadSiteProfile => "bad-site-profile",
    /// A site profile whose serial is not newer than the one in force.
    SiteRollback => "site-rollback",
    /// A site profile of another site than the box's, with no re-siting signed for this box.
    WrongSite => "wrong-site",
    /// The firewall compiled from a site profile does not pass `nft -c`.
    RulesetRefused => "ruleset-refused",
    /// A device that boots only dm-verity slots was given a bundle without a verity tree.
    UnverifiedSlot => "unverified-slot",
    /// The slot written does not match the signed dm-verity root hash (`veritysetup verify`).
    VerityMismatch => "verity-mismatch",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
