// SPDX-License-Identifier: MIT OR Apache-2.0
//! QEMU command line and guest kernel command line, as pure functions so that
//! they can be unit-tested without booting anything.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::Result;
use base64::Engine as _;

use crate::{Accel, VmConfig, VmError};

/// Kernel arguments every boot gets. `panic=-1` + `-no-reboot` make QEMU
/// exit the moment the guest panics; oops deliberately does not panic so
/// tests can find Oopses in the log and keep going. `no_timer_check`: on a
/// busy host an emulated CPU can miss the boot-time check that the IO-APIC
/// timer ticks within a few milliseconds, and the kernel then panics ("IO-APIC
/// + timer doesn't work"); the timer is QEMU's and works.
pub const DEFAULT_APPEND: &str = "console=ttyS0 panic=-1 loglevel=7 nokaslr no_timer_check";

/// x86 COMMAND_LINE_SIZE is 2048 including the terminating NUL.
pub const MAX_CMDLINE: usize = 2047;

/// Name of the virtio-serial port the guest writes its exit status to.
pub const EXIT_PORT: &str = "enoki.exit";

/// Name of the virtio-serial port a dev VM's guest takes commands on
/// (see [`crate::control`]).
pub const CONTROL_PORT: &str = "enoki.control";

/// virtiofs / 9p mount tag of the host share.
pub const SHARE_TAG: &str = "host";

/// How the host share reaches the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Share {
    /// vhost-user-fs served by virtiofsd on this socket.
    Virtiofs { socket: PathBuf },
    /// QEMU's built-in 9p server (slower, no extra process).
    NineP,
}

/// What the guest init should do, encoded on the kernel command line.
#[derive(Clone, Debug, Default)]
pub struct GuestParams {
    /// Shell command to run; None: interactive shell.
    pub cmd: Option<String>,
    pub cwd: PathBuf,
    /// Give the command the console as stdin (host stdin is a terminal).
    pub console_stdin: bool,
    pub term: Option<String>,
    pub cols_rows: Option<(u16, u16)>,
}

/// Everything [`qemu_args`] needs for one boot.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    pub cfg: &'a VmConfig,
    /// Resolved accelerator (never `Auto`).
    pub accel: Accel,
    pub share: Option<Share>,
    pub serial_log: &'a Path,
    pub exit_file: &'a Path,
    pub guest: GuestParams,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The guest kernel command line: defaults, user `--append`, then the
/// `enoki.*` parameters the init reads (base64 where the value is free text
/// or a path, whose bytes pass untouched).
pub fn kernel_cmdline(plan: &Plan) -> Result<String> {
    let mut a: Vec<String> = DEFAULT_APPEND.split(' ').map(str::to_owned).collect();
    if plan.accel != Accel::Kvm {
        // Emulated CPUs share the host's cores: one the host does not run
        // for seconds looks locked up to the (buddy) hard lockup detector,
        // whose report would panic the guest. The soft one stays.
        a.push("nmi_watchdog=0".into());
        // QEMU derives every emulated TSC from one monotonic host clock, but
        // the guest's sync check (run while vCPU threads start) calls them
        // unsynchronized and falls back to the HPET. Every HPET read is an
        // MMIO exit that takes QEMU's global lock, so each clock read on a
        // scheduling path (Enoki's runtime, each record) stalled every other
        // vCPU: hackbench under WFQ ran 3.6 s (HPET) against 1.75 s (TSC),
        // and 29 s against 2.4 s while recording.
        a.push("tsc=reliable".into());
    }
    if plan.accel == Accel::Mttcg {
        // In a parallel bring-up the secondary CPUs spin while the boot CPU
        // works; under MTTCG those spinning vCPUs take the host's cores from
        // it, and bringing up 8 CPUs took 2.5 s longer than one by one.
        a.push("cpuhp.parallel=0".into());
    }
    a.extend(plan.cfg.append.iter().cloned());
    if let Some(share) = &plan.share {
        a.push(format!(
            "enoki.share={}",
            b64(plan.cfg.root.as_os_str().as_bytes())
        ));
        a.push(format!(
            "enoki.sharefs={}",
            match share {
                Share::Virtiofs { .. } => "virtiofs",
                Share::NineP => "9p",
            }
        ));
    }
    a.push(format!(
        "enoki.cwd={}",
        b64(plan.guest.cwd.as_os_str().as_bytes())
    ));
    if let Some(cmd) = &plan.guest.cmd {
        a.push(format!("enoki.cmd={}", b64(cmd.as_bytes())));
        a.push(format!(
            "enoki.stdin={}",
            if plan.guest.console_stdin {
                "console"
            } else {
                "null"
            }
        ));
    }
    if let Some(t) = &plan.guest.term {
        if !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        {
            a.push(format!("enoki.term={t}"));
        }
    }
    if let Some((c, r)) = plan.guest.cols_rows {
        a.push(format!("enoki.cols={c} enoki.rows={r}"));
    }
    let line = a.join(" ");
    if line.len() > MAX_CMDLINE {
        return Err(VmError::CommandTooLong {
            len: line.len(),
            max: MAX_CMDLINE,
        }
        .into());
    }
    Ok(line)
}

/// `prefix` followed by `path` as a QEMU option value: its bytes untouched
/// except that each comma is doubled (QEMU's escape for a literal comma).
fn opt_path(prefix: &str, path: &Path) -> OsString {
    let mut bytes = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        bytes.push(b);
        if b == b',' {
            bytes.push(b',');
        }
    }
    OsString::from_vec(bytes)
}

/// A QEMU argument list under construction.
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, args: &[&str]) {
        self.0.extend(args.iter().map(OsString::from));
    }

    /// An option whose value is built with [`opt_path`] or holds a path.
    fn push_os(&mut self, opt: &str, value: impl Into<OsString>) {
        self.0.push(opt.into());
        self.0.push(value.into());
    }
}

/// The CPU model under TCG: everything QEMU emulates, except Enhanced REP
/// MOVSB/STOSB. With ERMS the kernel copies and zeroes large buffers
/// (page clears, copies to and from user memory) with `rep movsb`/`rep
/// stosb`, and QEMU 7.2 runs a `rep` instruction one iteration per
/// translated block: a byte costs what an instruction does. Without it,
/// the kernel uses `rep movsq`/`rep stosq`, eight bytes an iteration, which
/// keeps what emulated copies cost closer to what they cost on hardware,
/// where either runs at cache-line speed.
const TCG_CPU: &str = "max,-erms";

/// The full QEMU argument list (without the program name).
pub fn qemu_args(plan: &Plan) -> Result<Vec<OsString>> {
    let mut v = Args::default();
    v.push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    v.push(&["-machine", "pc"]);
    match plan.accel {
        Accel::Kvm => v.push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Mttcg => v.push(&["-accel", "tcg,thread=multi", "-cpu", TCG_CPU]),
        // Auto is resolved before we get here; treat it as the safe choice.
        Accel::Tcg | Accel::Auto => v.push(&["-accel", "tcg,thread=single", "-cpu", TCG_CPU]),
    }
    if let (Some(spec), false) = (&plan.cfg.plugin, plan.accel == Accel::Kvm) {
        v.push_os("-plugin", spec);
    }
    push_topology(&mut v, plan.cfg);
    let append = kernel_cmdline(plan)?;
    v.push_os("-kernel", &plan.cfg.kernel);
    v.push_os("-initrd", &plan.cfg.initrd);
    v.push(&["-append", &append]);
    push_consoles(&mut v, plan);
    push_share(&mut v, plan);
    Ok(v.0)
}

/// CPUs, sockets, memory and NUMA nodes.
fn push_topology(v: &mut Args, cfg: &VmConfig) {
    let cores = cfg.cpus / cfg.sockets;
    let smp = format!(
        "{},sockets={},cores={cores},threads=1",
        cfg.cpus, cfg.sockets
    );
    let mem = format!("{}M", cfg.mem_mib);
    v.push(&["-smp", &smp, "-m", &mem]);

    // One shared memfd backend per node: vhost-user (virtiofsd) needs shared
    // guest memory, and per-node backends give real NUMA nodes.
    let per_node_mem = cfg.mem_mib / u64::from(cfg.numa);
    let per_node_cpus = cfg.cpus / cfg.numa;
    for n in 0..cfg.numa {
        let obj = format!("memory-backend-memfd,id=mem{n},size={per_node_mem}M,share=on");
        let first = n * per_node_cpus;
        let last = first + per_node_cpus - 1;
        let cpus = if first == last {
            format!("{first}")
        } else {
            format!("{first}-{last}")
        };
        let node = format!("node,nodeid={n},cpus={cpus},memdev=mem{n}");
        v.push(&["-object", &obj, "-numa", &node]);
    }
    for src in 0..cfg.numa {
        for dst in (src + 1)..cfg.numa {
            v.push(&["-numa", &format!("dist,src={src},dst={dst},val=21")]);
        }
    }
}

/// ttyS0 to the serial log, hvc0 on QEMU's stdio, the exit port to a file.
fn push_consoles(v: &mut Args, plan: &Plan) {
    // ttyS0: full kernel log, to a file only.
    v.push_os(
        "-chardev",
        opt_path("file,id=serial0,path=", plan.serial_log),
    );
    v.push(&["-serial", "chardev:serial0"]);
    // hvc0: the command's stdio / the shell, on QEMU's own stdio.
    v.push(&["-device", "virtio-serial-pci,id=vser0"]);
    v.push(&["-chardev", "stdio,id=con0,signal=off"]);
    v.push(&[
        "-device",
        "virtconsole,bus=vser0.0,chardev=con0,name=console",
    ]);
    // Exit status: written by the guest init to a named virtio-serial port.
    v.push_os("-chardev", opt_path("file,id=exit0,path=", plan.exit_file));
    v.push(&[
        "-device",
        &format!("virtserialport,bus=vser0.0,chardev=exit0,name={EXIT_PORT}"),
    ]);
    // Commands from the host, on a socket QEMU listens on.
    if let Some(socket) = &plan.cfg.control {
        let mut opt = opt_path("socket,id=ctl0,path=", socket);
        opt.push(",server=on,wait=off");
        v.push_os("-chardev", opt);
        v.push(&[
            "-device",
            &format!("virtserialport,bus=vser0.0,chardev=ctl0,name={CONTROL_PORT}"),
        ]);
    }
}

/// The workspace share: vhost-user-fs on virtiofsd's socket, or QEMU's 9p.
fn push_share(v: &mut Args, plan: &Plan) {
    match &plan.share {
        Some(Share::Virtiofs { socket }) => {
            v.push_os("-chardev", opt_path("socket,id=vfs0,path=", socket));
            v.push(&[
                "-device",
                &format!("vhost-user-fs-pci,chardev=vfs0,tag={SHARE_TAG},queue-size=1024"),
            ]);
        }
        Some(Share::NineP) => {
            let mut opt = opt_path("local,path=", &plan.cfg.root);
            opt.push(format!(
                ",mount_tag={SHARE_TAG},security_model=none,multidevs=remap"
            ));
            v.push_os("-virtfs", opt);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig::with_root("/w/enoki").accel(Accel::Tcg)
    }

    fn plan<'a>(cfg: &'a VmConfig, share: Option<Share>, cmd: Option<&str>) -> Plan<'a> {
        Plan {
            cfg,
            accel: Accel::Tcg,
            share,
            serial_log: Path::new("/w/enoki/target/vm/logs/x.serial.log"),
            exit_file: Path::new("/tmp/run/exit"),
            guest: GuestParams {
                cmd: cmd.map(str::to_owned),
                cwd: PathBuf::from("/w/enoki"),
                ..Default::default()
            },
        }
    }

    fn joined(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn decode_bytes(line: &str, key: &str) -> Vec<u8> {
        let v = line
            .split(' ')
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing in {line}"));
        base64::engine::general_purpose::STANDARD.decode(v).unwrap()
    }

    fn decode(line: &str, key: &str) -> String {
        String::from_utf8(decode_bytes(line, key)).unwrap()
    }

    #[test]
    fn default_topology_two_sockets_two_nodes() {
        let c = cfg();
        let a = joined(&qemu_args(&plan(&c, None, Some("true"))).unwrap());
        assert!(a.contains("-smp 8,sockets=2,cores=4,threads=1"), "{a}");
        assert!(a.contains("-m 4096M"));
        assert!(a.contains("-object memory-backend-memfd,id=mem0,size=2048M,share=on"));
        assert!(a.contains("-numa node,nodeid=0,cpus=0-3,memdev=mem0"));
        assert!(a.contains("-numa node,nodeid=1,cpus=4-7,memdev=mem1"));
        assert!(a.contains("-numa dist,src=0,dst=1,val=21"));
        assert!(a.contains("-no-reboot"));
        assert!(a.contains("-accel tcg,thread=single -cpu max,-erms"));
    }

    #[test]
    fn single_node_and_odd_shapes() {
        let c = cfg().cpus(2).sockets(1).numa(1).mem_mib(512);
        let a = joined(&qemu_args(&plan(&c, None, None)).unwrap());
        assert!(a.contains("-smp 2,sockets=1,cores=2,threads=1"));
        assert!(a.contains("-numa node,nodeid=0,cpus=0-1,memdev=mem0"));
        assert!(!a.contains("dist"));
        let c = cfg().cpus(4).sockets(4).numa(4).mem_mib(4096);
        let a = joined(&qemu_args(&plan(&c, None, None)).unwrap());
        assert!(a.contains("-numa node,nodeid=3,cpus=3,memdev=mem3"));
        assert!(a.contains("-numa dist,src=2,dst=3,val=21"));
        assert_eq!(a.matches("-numa dist").count(), 6);
    }

    #[test]
    fn accelerators() {
        let c = cfg();
        for (accel, want) in [
            (Accel::Kvm, "-accel kvm -cpu host"),
            (Accel::Tcg, "-accel tcg,thread=single -cpu max,-erms"),
            (Accel::Mttcg, "-accel tcg,thread=multi -cpu max,-erms"),
        ] {
            let mut p = plan(&c, None, None);
            p.accel = accel;
            assert!(joined(&qemu_args(&p).unwrap()).contains(want), "{accel}");
            let line = kernel_cmdline(&p).unwrap();
            assert_eq!(
                line.contains("nmi_watchdog=0"),
                accel != Accel::Kvm,
                "the hard lockup detector only with real CPUs: {accel}"
            );
            assert_eq!(
                line.contains("tsc=reliable"),
                accel != Accel::Kvm,
                "an emulated TSC is the clock, not the HPET: {accel}"
            );
            assert_eq!(
                line.contains("cpuhp.parallel=0"),
                accel == Accel::Mttcg,
                "secondary CPUs come up one by one under MTTCG only: {accel}"
            );
        }
    }

    #[test]
    fn a_plugin_loads_under_tcg_only() {
        let c = cfg();
        assert!(!joined(&qemu_args(&plan(&c, None, None)).unwrap()).contains("-plugin"));
        let c = cfg().plugin("/p/libx.so,dir=/d");
        for (accel, loaded) in [
            (Accel::Tcg, true),
            (Accel::Mttcg, true),
            (Accel::Kvm, false),
        ] {
            let mut p = plan(&c, None, None);
            p.accel = accel;
            let a = joined(&qemu_args(&p).unwrap());
            assert_eq!(
                a.contains("-plugin /p/libx.so,dir=/d"),
                loaded,
                "{accel}: {a}"
            );
        }
    }

    #[test]
    fn consoles_and_exit_port() {
        let c = cfg();
        let a = joined(&qemu_args(&plan(&c, None, Some("true"))).unwrap());
        assert!(a.contains("-chardev file,id=serial0,path=/w/enoki/target/vm/logs/x.serial.log"));
        assert!(a.contains("-serial chardev:serial0"));
        assert!(a.contains("-chardev stdio,id=con0,signal=off"));
        assert!(a.contains("virtconsole,bus=vser0.0,chardev=con0"));
        assert!(a.contains("-chardev file,id=exit0,path=/tmp/run/exit"));
        assert!(a.contains("virtserialport,bus=vser0.0,chardev=exit0,name=enoki.exit"));
        assert!(
            !a.contains("enoki.control"),
            "a control port only when asked"
        );
    }

    #[test]
    fn a_dev_vm_takes_commands_on_its_control_socket() {
        let c = cfg().control("/w/enoki/target/vm/control,1.sock");
        let a = joined(&qemu_args(&plan(&c, None, None)).unwrap());
        assert!(a.contains(
            "-chardev socket,id=ctl0,path=/w/enoki/target/vm/control,,1.sock,server=on,wait=off"
        ));
        assert!(a.contains("virtserialport,bus=vser0.0,chardev=ctl0,name=enoki.control"));
    }

    #[test]
    fn shares() {
        let c = cfg();
        let vfs = Share::Virtiofs {
            socket: PathBuf::from("/tmp/run/vfs.sock"),
        };
        let a = joined(&qemu_args(&plan(&c, Some(vfs.clone()), None)).unwrap());
        assert!(a.contains("-chardev socket,id=vfs0,path=/tmp/run/vfs.sock"));
        assert!(a.contains("vhost-user-fs-pci,chardev=vfs0,tag=host"));
        assert!(!a.contains("-virtfs"));
        let line = kernel_cmdline(&plan(&c, Some(vfs), None)).unwrap();
        assert_eq!(decode(&line, "enoki.share"), "/w/enoki");
        assert!(line.contains("enoki.sharefs=virtiofs"));

        let a = joined(&qemu_args(&plan(&c, Some(Share::NineP), None)).unwrap());
        assert!(a.contains("-virtfs local,path=/w/enoki,mount_tag=host,security_model=none"));
        let line = kernel_cmdline(&plan(&c, Some(Share::NineP), None)).unwrap();
        assert!(line.contains("enoki.sharefs=9p"));

        let line = kernel_cmdline(&plan(&c, None, None)).unwrap();
        assert!(!line.contains("enoki.share"));
    }

    #[test]
    fn cmdline_defaults_append_and_command() {
        let c = cfg().append("sched_verbose  foo=1");
        let cmd = "echo 'a b' | grep -c \"a\" && exit 7";
        let line = kernel_cmdline(&plan(&c, None, Some(cmd))).unwrap();
        assert!(
            line.starts_with(
                "console=ttyS0 panic=-1 loglevel=7 nokaslr no_timer_check nmi_watchdog=0 tsc=reliable sched_verbose foo=1 "
            ),
            "{line}"
        );
        assert!(!line.contains("oops=panic"));
        assert_eq!(decode(&line, "enoki.cmd"), cmd);
        assert_eq!(decode(&line, "enoki.cwd"), "/w/enoki");
        assert!(line.contains("enoki.stdin=null"));
        // No command: interactive shell, no enoki.cmd.
        let line = kernel_cmdline(&plan(&c, None, None)).unwrap();
        assert!(!line.contains("enoki.cmd"));
    }

    #[test]
    fn term_is_sanitised_and_size_passed() {
        let c = cfg();
        let mut p = plan(&c, None, None);
        p.guest.term = Some("xterm-256color".into());
        p.guest.cols_rows = Some((120, 40));
        let line = kernel_cmdline(&p).unwrap();
        assert!(line.contains("enoki.term=xterm-256color enoki.cols=120 enoki.rows=40"));
        p.guest.term = Some("evil term".into());
        assert!(!kernel_cmdline(&p).unwrap().contains("enoki.term"));
    }

    #[test]
    fn too_long_command_is_a_clear_error() {
        let c = cfg();
        let long = "x".repeat(3000);
        let e = kernel_cmdline(&plan(&c, None, Some(&long))).unwrap_err();
        let e = e.to_string();
        let said: usize = e
            .split("would be ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no length in: {e}"));
        assert!(said > long.len(), "{e}");
        assert!(e.contains("(max 2047): put the command in a script"), "{e}");
    }

    #[test]
    fn non_utf8_paths_pass_through_as_bytes() {
        use std::ffi::OsStr;
        let root = PathBuf::from(OsStr::from_bytes(b"/w/en\xffoki"));
        let c = VmConfig::with_root(&root).accel(Accel::Tcg);
        let serial = root.join("target/vm/logs/x.serial.log");
        let mut p = plan(&c, Some(Share::NineP), Some("true"));
        p.serial_log = &serial;
        p.guest.cwd = root.join("vm");
        let args = qemu_args(&p).unwrap();
        let value_of = |opt: &str, prefix: &[u8]| -> Vec<u8> {
            args.windows(2)
                .filter(|w| w[0] == opt)
                .map(|w| w[1].as_bytes().to_vec())
                .find(|v| v.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {opt} with {prefix:?}"))
        };
        assert_eq!(
            value_of("-kernel", b""),
            b"/w/en\xffoki/target/kernel/arch/x86/boot/bzImage"
        );
        assert_eq!(
            value_of("-initrd", b""),
            b"/w/en\xffoki/target/rootfs/initrd.cpio"
        );
        assert_eq!(
            value_of("-chardev", b"file,id=serial0"),
            b"file,id=serial0,path=/w/en\xffoki/target/vm/logs/x.serial.log"
        );
        assert!(value_of("-virtfs", b"").starts_with(b"local,path=/w/en\xffoki,mount_tag=host,"));
        let line = kernel_cmdline(&p).unwrap();
        assert_eq!(decode_bytes(&line, "enoki.share"), b"/w/en\xffoki");
        assert_eq!(decode_bytes(&line, "enoki.cwd"), b"/w/en\xffoki/vm");
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let c = VmConfig::with_root("/w/a,b");
        let mut p = plan(&c, Some(Share::NineP), None);
        p.exit_file = Path::new("/tmp/r,1/exit");
        let a = joined(&qemu_args(&p).unwrap());
        assert!(
            a.contains("-chardev file,id=exit0,path=/tmp/r,,1/exit "),
            "{a}"
        );
        assert!(
            a.contains("-virtfs local,path=/w/a,,b,mount_tag=host"),
            "{a}"
        );
        let vfs = Share::Virtiofs {
            socket: PathBuf::from("/tmp/r,1/v.sock"),
        };
        let a = joined(&qemu_args(&plan(&c, Some(vfs), None)).unwrap());
        assert!(
            a.contains("-chardev socket,id=vfs0,path=/tmp/r,,1/v.sock "),
            "{a}"
        );
    }
}
