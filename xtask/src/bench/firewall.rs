//! `bench firewall`: the generated ruleset's size and `nft -f` load time, for the default
//! recipe's model and a synthetic 200-conduit one (next to loading an empty table), and TCP
//! throughput through the firewall between two network namespaces (iperf3, the field zone to
//! the broker's port on the appliance, a conduit) next to the same path with no ruleset.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use netns::{Ns, veth};

use super::{Timed, time_cmd};
use crate::{Ctx, out};

fn synthetic(base: &zones::Model, n: u16) -> zones::Model {
    let mut m = base.clone();
    for i in 0..n {
        m.zones.push(zones::Zone {
            name: format!("z{i}"),
            description: "synthetic".into(),
            security_level: zones::SecurityLevel::SL2,
            interfaces: vec![],
            dhcp: zones::Dhcp::No,
            addresses: vec![],
            ranges: vec![
                format!("10.{}.{}.0/24", 100 + i / 250, i % 250).parse().expect("a valid range"),
                format!("fd00:{i:x}::/64").parse().expect("a valid range"),
            ],
        });
        m.conduits.push(zones::Conduit {
            name: format!("c{i}"),
            from: format!("z{i}"),
            to: "appliance".into(),
            protocol: if i % 3 == 0 { zones::Protocol::Udp } else { zones::Protocol::Tcp },
            ports: vec![zones::Port::One(1000 + i)],
            purpose: "synthetic".into(),
            exception: None,
        });
    }
    m
}

fn iperf(client: &Ns, server: &Ns, to: &str, port: &str, secs: u32) -> Result<f64> {
    let mut srv = server.exec("iperf3").args(["-s", "-1", "-p", port]).stdout(std::process::Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let o = client
        .exec("iperf3")
        .args(["-c", to, "-p", port, "-t", &secs.to_string(), "-J"])
        .output()
        .context("iperf3 (apt-get install -y iperf3)")?;
    let _ = srv.wait();
    if !o.status.success() {
        bail!("iperf3: {}", String::from_utf8_lossy(&o.stdout).lines().take(5).collect::<Vec<_>>().join(" "));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    Ok(v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9)
}

pub fn run(_ctx: &Ctx, recipe: &recipe::Recipe, runs: usize) -> Result<()> {
    let id = std::process::id() % 100_000;
    let appl = Ns::new(&format!("bf{id}a")).map_err(anyhow::Error::msg)?;
    let field = Ns::new(&format!("bf{id}f")).map_err(anyhow::Error::msg)?;
    veth(&appl, "f0", &field, "f1").map_err(anyhow::Error::msg)?;
    appl.ip(&["addr", "add", "10.20.0.1/24", "dev", "f0"]).map_err(anyhow::Error::msg)?;
    field.ip(&["addr", "add", "10.20.0.10/24", "dev", "f1"]).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let origin = zones::Origin { image: format!("{} {}", recipe.name, recipe.version), site: String::new() };
    let empty = dir.path().join("empty.nft");
    std::fs::write(&empty, "flush ruleset\ntable inet airlock {\n}\n")?;
    let flush = |ns: &Ns| -> Result<()> {
        let s = ns.exec("nft").args(["flush", "ruleset"]).status()?;
        if !s.success() {
            bail!("nft flush ruleset failed");
        }
        Ok(())
    };
    out!("firewall (nft -f in a fresh network namespace; median of {runs}):");
    let empty_t = Timed::of(runs, |_| {
        flush(&appl)?;
        time_cmd(appl.exec("nft").arg("-f").arg(&empty))
    })?;
    let mut default_file = None;
    for (what, m) in
        [("default model", recipe.zones.clone()), ("200 synthetic conduits", synthetic(&recipe.zones, 200))]
    {
        let rules = zones::ruleset(&m, &origin);
        let f = dir.path().join(format!("{}.nft", what.replace(' ', "-")));
        std::fs::write(&f, &rules)?;
        let t = Timed::of(runs, |_| {
            flush(&appl)?;
            time_cmd(appl.exec("nft").arg("-f").arg(&f))
        })?;
        out!(
            "  {what:<24} {} conduits, {:>7} bytes, {:>5} lines: load {:>6.1} ms [{:.1}–{:.1}]   empty table {:>5.1} ms   ratio {:>5.1}",
            m.conduits.len(),
            rules.len(),
            rules.lines().count(),
            t.median * 1e3,
            t.min * 1e3,
            t.max * 1e3,
            empty_t.median * 1e3,
            t.median / empty_t.median
        );
        if default_file.is_none() {
            default_file = Some(f);
        }
    }

    // Throughput: field → appliance tcp 1883 (the field-mqtt conduit), with and without rules.
    let secs = 5;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let default_file = default_file.context("no default ruleset")?;
    for _ in 0..runs.max(1) {
        flush(&appl)?;
        without.push(iperf(&field, &appl, "10.20.0.1", "1883", secs)?);
        let s = appl.exec("nft").arg("-f").arg(&default_file).status()?;
        if !s.success() {
            bail!("loading the default ruleset failed");
        }
        with.push(iperf(&field, &appl, "10.20.0.1", "1883", secs)?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, wo) = (med(&mut with), med(&mut without));
    out!(
        "  iperf3 field → appliance tcp/1883 ({secs} s, median of {runs}): through the firewall {w:>6.2} Gbit/s   no ruleset {wo:>6.2} Gbit/s   ratio {:>5.2}",
        w / wo
    );
    Ok(())
}
