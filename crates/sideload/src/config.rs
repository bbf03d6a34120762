//! `/etc/airlock/device.toml`: the device's identity, written by the image build and read by
//! the agent. This module is the one owner of the format (the builder serialises it here too).

use product::{Channel, Version};
use serde::{Deserialize, Serialize};

/// Boot attempts a new slot gets before the boot loader falls back.
pub const DEFAULT_TRIES: u32 = 3;

fn default_tries() -> u32 {
    DEFAULT_TRIES
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub product: String,
    pub channel: Channel,
    #[serde(default = "default_tries")]
    pub tries: u32,
    /// The version of the image this file belongs to (each slot carries its own): adopted as
    /// the running slot's record on a device's first boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_version: Option<u64>,
    /// This image's kernel command line without `root=`: the boot entry the agent writes
    /// for a slot whose bundle carries none (formats 1 and 2), and the factory slot's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The image boots only dm-verity slots: a bundle without a verity tree is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verity: bool,
}

impl DeviceConfig {
    pub fn parse(text: &str) -> Result<DeviceConfig, String> {
        let c: DeviceConfig = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
        let ok = |ch: u8| ch.is_ascii_alphanumeric() || b"._-".contains(&ch);
        if c.product.is_empty() || c.product.len() > 128 || !c.product.bytes().all(ok) {
            return Err("product must be 1 to 128 characters of a-z A-Z 0-9 . _ -".into());
        }
        if !(1..=10).contains(&c.tries) {
            return Err(format!("tries = {} is out of range: use 1 to 10", c.tries));
        }
        if let Some(cmd) = &c.cmdline {
            bundle::valid_cmdline(cmd)?;
        }
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# Airlock device identity (written by the image build; read by `sideload`).\n{body}")
    }

    /// Channels stay apart: a device trusts only a policy of its own channel, and a release
    /// device never a policy that holds the INSECURE dev key.
    pub fn check_policy(&self, policy: &trust::Policy) -> Result<(), String> {
        if policy.channel() != self.channel {
            return Err(format!(
                "this device follows the `{}` channel but its trust policy is a `{}` policy: a device trusts only its own channel's keys",
                self.channel,
                policy.channel()
            ));
        }
        if self.channel == Channel::Release && policy.trusts_dev_key() {
            return Err("a release device never trusts the INSECURE dev key".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(product: &str, extra: &str) -> Result<DeviceConfig, String> {
        DeviceConfig::parse(&format!("product = \"{product}\"\nchannel = \"dev\"\n{extra}"))
    }

    #[test]
    fn the_product_name_is_bounded_and_plain() {
        let long = "p".repeat(128);
        assert!(parse(&long, "").is_ok(), "128 characters is the limit, inclusive");
        let err = parse(&format!("{long}x"), "").unwrap_err();
        assert!(err.contains("1 to 128 characters"), "{err}");
        assert!(parse("", "").unwrap_err().contains("1 to 128"));
        for good in ["airlock.parking-controller.x86_64", "A_b-9.z"] {
            assert!(parse(good, "").is_ok(), "{good}");
        }
        for bad in ["a b", "a/b", "ä", "a\\u0000b", "a:b"] {
            assert!(parse(bad, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn tries_are_one_to_ten_three_when_unsaid() {
        assert_eq!(parse("p", "").unwrap().tries, DEFAULT_TRIES);
        assert_eq!(DEFAULT_TRIES, 3);
        for (t, ok) in [(0, false), (1, true), (10, true), (11, false)] {
            let r = parse("p", &format!("tries = {t}"));
            assert_eq!(r.is_ok(), ok, "tries = {t}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&format!("tries = {t} is out of range")), "{e}");
            }
        }
        assert!(parse("p", "colour = \"red\"").unwrap_err().contains("colour"), "unknown fields are refused");
        // The image's command line goes into boot entries: plain words, no `root=`.
        assert!(parse("p", "cmdline = \"ro quiet\"").is_ok());
        for bad in ["ro\\ninit=/bin/sh", "root=/dev/sda1 ro", ""] {
            assert!(parse("p", &format!("cmdline = \"{bad}\"")).unwrap_err().starts_with("cmdline: "), "{bad}");
        }
    }

    #[test]
    fn the_written_file_reads_back_the_same() {
        let c = DeviceConfig {
            product: "airlock.parking-controller.x86_64".into(),
            channel: Channel::Release,
            tries: 5,
            version: Some(Version::parse("2.1.0").unwrap()),
            security_version: Some(4),
            cmdline: Some("rootfstype=squashfs ro".into()),
            verity: false,
        };
        let text = c.to_toml();
        assert!(text.starts_with("# Airlock device identity"), "{text}");
        assert!(text.contains("tries = 5"), "{text}");
        assert_eq!(DeviceConfig::parse(&text).unwrap(), c);
    }

    #[test]
    fn a_device_trusts_only_its_own_channels_policy() {
        let dev = trust::Policy::parse(include_str!("../../../keys/dev/trust.toml")).unwrap();
        let on = |channel| DeviceConfig { channel, ..parse("p", "").unwrap() };
        assert_eq!(on(Channel::Dev).check_policy(&dev), Ok(()));
        let err = on(Channel::Release).check_policy(&dev).unwrap_err();
        assert!(err.contains("follows the `release` channel but its trust policy is a `dev` policy"), "{err}");
        let key = trust::SecretKey::from_seed([7; 32], [7; 8]).public().to_base64();
        let release = trust::Policy::parse(&format!(
            "version = 1\nchannel = \"release\"\n[release]\nthreshold = 1\nkeys = [{{ name = \"vendor\", key = \"{key}\" }}]\n"
        ))
        .unwrap();
        assert_eq!(on(Channel::Release).check_policy(&release), Ok(()));
        assert!(on(Channel::Dev).check_policy(&release).unwrap_err().contains("only its own channel"));
    }
}
