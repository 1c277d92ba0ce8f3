//! Tests on real TAP devices. Creating a TAP needs root (CAP_NET_ADMIN) and the `ip`
//! tool: without root these tests print a note and pass; as root a failure to set up
//! is a failure. Names carry the process id so concurrent runs do not collide; the
//! traffic test moves its TAP into a network namespace it makes, so no address or
//! frame touches the host's own network.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use super::device::default_mac;
use super::test_utils::{memory, wakes_within, watched_readable, wo, Driver, BUF};
use super::{
    features, Error, Net, NetConfig, CONFIG_SPACE_SIZE, CONFIG_STATUS_OFFSET, NUM_BUFFERS_OFFSET,
    RX_QUEUE, TAP_EVENT_TOKEN, TX_QUEUE, VNET_HDR_LEN,
};
use crate::virtio::{VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_CONFIG};

/// How long the host side gets to deliver a frame or an error.
const WAIT: Duration = Duration::from_secs(5);
/// The namespace's address on the TAP, and the guest's (a neighbour entry with the
/// guest's MAC, so datagrams go out without ARP).
const HOST_ADDR: &str = "10.213.7.1/24";
const GUEST_ADDR: &str = "10.213.7.2";
const PAYLOAD: &[u8] = b"cabin-rx";

/// Runs `ip args`; whether it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `ip args` and fails the test if it fails.
fn ip_ok(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process runs with effective uid 0.
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A name unique to this process and `suffix`, at most 15 bytes.
fn unique(suffix: &str) -> String {
    format!("cbt{}{suffix}", std::process::id() % 100_000)
}

/// A persistent TAP made with `ip tuntap add`, deleted on drop (with the namespace
/// it was moved to, if any).
struct TestTap {
    name: String,
    netns: Option<String>,
}

impl TestTap {
    /// Creates the TAP, or returns `None` with a note when not running as root.
    fn create(suffix: &str) -> Option<TestTap> {
        if !is_root() {
            eprintln!("note: skipped, creating a TAP device needs root");
            return None;
        }
        let name = unique(suffix);
        // Left over from an interrupted run of a process with the same id.
        ip(&["link", "del", "dev", &name]);
        ip_ok(&["tuntap", "add", "dev", &name, "mode", "tap"]);
        Some(TestTap { name, netns: None })
    }

    fn config(&self) -> NetConfig {
        NetConfig {
            tap: self.name.clone(),
            mac: None,
            ..NetConfig::default()
        }
    }

    /// Moves the TAP into a new network namespace, gives it [`HOST_ADDR`], brings it
    /// up and points [`GUEST_ADDR`] at `guest_mac`.
    fn move_to_netns(&mut self, guest_mac: [u8; 6]) {
        let ns = unique("ns");
        ip(&["netns", "del", &ns]);
        ip_ok(&["netns", "add", &ns]);
        self.netns = Some(ns.clone());
        let mac = guest_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip_ok(&["link", "set", "dev", &self.name, "netns", &ns]);
        ip_ok(&["-n", &ns, "addr", "add", HOST_ADDR, "dev", &self.name]);
        ip_ok(&["-n", &ns, "link", "set", "dev", &self.name, "up"]);
        ip_ok(&[
            "-n", &ns, "neigh", "add", GUEST_ADDR, "lladdr", &mac, "dev", &self.name,
        ]);
    }

    /// `ip -n NS args`.
    fn ns_ip(&self, args: &[&str]) {
        let ns = self.netns.as_deref().expect("moved to a namespace");
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip_ok(&all);
    }

    /// Runs `cmd` with bash inside the namespace; its stdout.
    fn ns_bash(&self, cmd: &str) -> String {
        let ns = self.netns.as_deref().expect("moved to a namespace");
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "bash", "-c", cmd])
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Frames the host side received from the TAP (what the guest sent).
    fn host_rx_packets(&self) -> u64 {
        self.ns_bash(&format!(
            "cat /sys/class/net/{}/statistics/rx_packets",
            self.name
        ))
        .trim()
        .parse()
        .expect("a counter")
    }
}

impl Drop for TestTap {
    fn drop(&mut self) {
        if let Some(ns) = &self.netns {
            // Deleting the namespace deletes the TAP in it.
            ip(&["netns", "del", ns]);
        }
        ip(&["link", "del", "dev", &self.name]);
    }
}

/// A broadcast Ethernet frame from `src` (an ARP ethertype, zero payload), after a
/// zero header.
fn guest_frame(src: [u8; 6]) -> Vec<u8> {
    let mut bytes = vec![0u8; VNET_HDR_LEN];
    bytes.extend_from_slice(&[0xff; 6]);
    bytes.extend_from_slice(&src);
    bytes.extend_from_slice(&[0x08, 0x06]);
    bytes.extend_from_slice(&[0; 28]);
    bytes
}

/// Attaches to a TAP just closed by this process. A child another test thread is
/// spawning (`ip`) holds a copy of every fd from fork to exec, so the TAP may stay
/// attached for a moment after `close`: retry while it is busy.
fn attach_when_released(config: &NetConfig) -> Net {
    let deadline = Instant::now() + WAIT;
    loop {
        match Net::new(config, 2) {
            Err(Error::Busy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.expect("closing the device releases the TAP"),
        }
    }
}

#[test]
fn net_new_real_tap_attaches_then_busy_then_missing() {
    let Some(tap) = TestTap::create("a") else {
        return;
    };

    let net = Net::new(&tap.config(), 0).unwrap();

    assert_eq!(net.mac(), default_mac(&tap.name));
    assert_eq!(net.tap_name(), tap.name);
    assert_ne!(
        net.avail_features() & features::CSUM,
        0,
        "Linux TAPs support checksum offload"
    );

    let err = Net::new(&tap.config(), 1).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&tap.name) && text.contains("TUNSETIFF"),
        "{text}"
    );

    drop(net);
    let again = attach_when_released(&tap.config());
    drop(again);
    assert!(
        ip(&["link", "show", "dev", &tap.name]),
        "the TAP outlives the device"
    );

    let missing = unique("z");
    let err = Net::new(
        &NetConfig {
            tap: missing.clone(),
            mac: None,
            ..NetConfig::default()
        },
        3,
    )
    .unwrap_err();
    assert!(matches!(err, Error::NoSuchDevice { .. }), "{err}");
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(
        !ip(&["link", "show", "dev", &missing]),
        "no TAP was created"
    );
}

#[test]
fn net_real_tap_frames_both_ways_link_down_and_removal() {
    let Some(mut tap) = TestTap::create("b") else {
        return;
    };
    let mut net = Net::new(&tap.config(), 0).unwrap();
    let mac = net.mac();
    tap.move_to_netns(mac);
    let mem = memory();
    let mut driver = Driver::new(&mem);
    // The header alone, then the frame: Linux's layout for big receive buffers.
    let chains: Vec<(u16, u64)> = (0..6u64)
        .map(|i| {
            let addr = BUF + i * 0x1000;
            let head = driver.post(RX_QUEUE, &[wo(addr, 12), wo(addr + 12, 2036)]);
            (head, addr)
        })
        .collect();
    net.activate(driver.params(VIRTIO_F_VERSION_1 | features::MAC | features::STATUS))
        .unwrap();

    // Host to guest: a UDP datagram to the guest's address.
    tap.ns_bash(&format!(
        "echo -n {} > /dev/udp/{GUEST_ADDR}/9999",
        String::from_utf8_lossy(PAYLOAD)
    ));
    let deadline = Instant::now() + WAIT;
    let received = loop {
        let woke = wakes_within(&net, 100);
        assert!(woke || Instant::now() < deadline, "no frame arrived");
        net.process_event(TAP_EVENT_TOKEN);
        let found = driver.used(RX_QUEUE).iter().find_map(|&(head, len)| {
            let addr = chains.iter().find(|&&(h, _)| u32::from(h) == head)?.1;
            let bytes = driver.read(addr, len as usize);
            bytes.ends_with(PAYLOAD).then_some(bytes)
        });
        if let Some(bytes) = found {
            break bytes;
        }
        // IPv6 chatter in the new namespace may take a buffer or two; there are enough.
        assert!(driver.used(RX_QUEUE).len() < chains.len(), "out of buffers");
    };
    assert_eq!(received[NUM_BUFFERS_OFFSET..VNET_HDR_LEN], [1, 0]);
    assert_eq!(received[0], 0, "no header flags without GUEST_CSUM");
    assert_eq!(
        received[VNET_HDR_LEN..VNET_HDR_LEN + 6],
        mac,
        "to the guest"
    );
    assert_eq!(received[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14], [0x08, 0x00]);

    // Guest to host.
    let before = tap.host_rx_packets();
    driver.send(BUF + 0x10_0000, &guest_frame(mac));
    net.process_queue(TX_QUEUE);
    assert_eq!(net.stats().tx_frames, 1);
    assert_eq!(tap.host_rx_packets(), before + 1);

    // Link down: frames are dropped, the TAP is kept.
    tap.ns_ip(&["link", "set", "dev", &tap.name, "down"]);
    driver.send(BUF + 0x10_1000, &guest_frame(mac));
    net.process_queue(TX_QUEUE);
    assert_eq!(net.stats().tx_dropped, 1);
    assert!(net.link_up());
    tap.ns_ip(&["link", "set", "dev", &tap.name, "up"]);
    driver.send(BUF + 0x10_2000, &guest_frame(mac));
    net.process_queue(TX_QUEUE);
    assert_eq!(net.stats().tx_frames, 2);

    // The TAP is deleted: the device notices through its event fd, reports the link
    // down and stops watching.
    tap.ns_ip(&["link", "del", "dev", &tap.name]);
    assert!(wakes_within(&net, 5000), "the TAP's failure is visible");
    net.process_event(TAP_EVENT_TOKEN);
    assert!(!net.link_up());
    let mut config = [0u8; CONFIG_SPACE_SIZE];
    net.read_config(0, &mut config);
    assert_eq!(
        config[CONFIG_STATUS_OFFSET..CONFIG_STATUS_OFFSET + 2],
        [0, 0]
    );
    assert_ne!(driver.irq.status() & VIRTIO_MMIO_INT_CONFIG, 0);
    assert!(!watched_readable(&net));
    driver.send(BUF + 0x10_3000, &guest_frame(mac));
    net.process_queue(TX_QUEUE);
    assert_eq!(net.stats().tx_dropped, 2);
}
