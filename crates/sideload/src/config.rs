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
