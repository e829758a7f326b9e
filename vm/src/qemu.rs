// SPDX-License-Identifier: MIT OR Apache-2.0
//! QEMU command line and guest kernel command line, as pure functions so that
//! they can be unit-tested without booting anything.

use std::path::{Path, PathBuf};

use anyhow::Result;
use base64::Engine as _;

use crate::{Accel, VmConfig, VmError};

/// Kernel arguments every boot gets. `panic=-1` + `-no-reboot` make QEMU
/// exit the moment the guest panics; oops deliberately does not panic so
/// tests can find Oopses in the log and keep going.
pub const DEFAULT_APPEND: &str = "console=ttyS0 panic=-1 loglevel=7 nokaslr";

/// x86 COMMAND_LINE_SIZE is 2048 including the terminating NUL.
pub const MAX_CMDLINE: usize = 2047;

/// Name of the virtio-serial port the guest writes its exit status to.
pub const EXIT_PORT: &str = "enoki.exit";

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

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// The guest kernel command line: defaults, user `--append`, then the
/// `enoki.*` parameters the init reads (base64 where the value is free text).
pub fn kernel_cmdline(plan: &Plan) -> Result<String> {
    let mut a: Vec<String> = DEFAULT_APPEND.split(' ').map(str::to_owned).collect();
    a.extend(plan.cfg.append.iter().cloned());
    if let Some(share) = &plan.share {
        a.push(format!(
            "enoki.share={}",
            b64(&plan.cfg.root.to_string_lossy())
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
        b64(&plan.guest.cwd.to_string_lossy())
    ));
    if let Some(cmd) = &plan.guest.cmd {
        a.push(format!("enoki.cmd={}", b64(cmd)));
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

/// The full QEMU argument list (without the program name).
pub fn qemu_args(plan: &Plan) -> Result<Vec<String>> {
    let cfg = plan.cfg;
    let mut v: Vec<String> = Vec::new();
    let mut push = |args: &[&str]| v.extend(args.iter().map(|s| s.to_string()));

    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-machine", "pc"]);
    match plan.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Mttcg => push(&["-accel", "tcg,thread=multi", "-cpu", "max"]),
        // Auto is resolved before we get here; treat it as the safe choice.
        Accel::Tcg | Accel::Auto => push(&["-accel", "tcg,thread=single", "-cpu", "max"]),
    }

    let cores = cfg.cpus / cfg.sockets;
    let smp = format!(
        "{},sockets={},cores={cores},threads=1",
        cfg.cpus, cfg.sockets
    );
    let mem = format!("{}M", cfg.mem_mib);
    push(&["-smp", &smp, "-m", &mem]);

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
        push(&["-object", &obj, "-numa", &node]);
    }
    for src in 0..cfg.numa {
        for dst in (src + 1)..cfg.numa {
            push(&["-numa", &format!("dist,src={src},dst={dst},val=21")]);
        }
    }

    let append = kernel_cmdline(plan)?;
    push(&[
        "-kernel",
        &cfg.kernel.to_string_lossy(),
        "-initrd",
        &cfg.initrd.to_string_lossy(),
    ]);
    push(&["-append", &append]);

    // ttyS0: full kernel log, to a file only.
    push(&[
        "-chardev",
        &format!("file,id=serial0,path={}", plan.serial_log.display()),
    ]);
    push(&["-serial", "chardev:serial0"]);
    // hvc0: the command's stdio / the shell, on QEMU's own stdio.
    push(&["-device", "virtio-serial-pci,id=vser0"]);
    push(&["-chardev", "stdio,id=con0,signal=off"]);
    push(&[
        "-device",
        "virtconsole,bus=vser0.0,chardev=con0,name=console",
    ]);
    // Exit status: written by the guest init to a named virtio-serial port.
    push(&[
        "-chardev",
        &format!("file,id=exit0,path={}", plan.exit_file.display()),
    ]);
    push(&[
        "-device",
        &format!("virtserialport,bus=vser0.0,chardev=exit0,name={EXIT_PORT}"),
    ]);

    match &plan.share {
        Some(Share::Virtiofs { socket }) => {
            push(&[
                "-chardev",
                &format!("socket,id=vfs0,path={}", socket.display()),
            ]);
            push(&[
                "-device",
                &format!("vhost-user-fs-pci,chardev=vfs0,tag={SHARE_TAG},queue-size=1024"),
            ]);
        }
        Some(Share::NineP) => {
            let root = cfg.root.to_string_lossy().replace(',', ",,");
            push(&[
                "-virtfs",
                &format!(
                    "local,path={root},mount_tag={SHARE_TAG},security_model=none,multidevs=remap"
                ),
            ]);
        }
        None => {}
    }
    Ok(v)
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

    fn joined(args: &[String]) -> String {
        args.join(" ")
    }

    fn decode(line: &str, key: &str) -> String {
        let v = line
            .split(' ')
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing in {line}"));
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
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
        assert!(a.contains("-accel tcg,thread=single -cpu max"));
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
            (Accel::Tcg, "-accel tcg,thread=single -cpu max"),
            (Accel::Mttcg, "-accel tcg,thread=multi -cpu max"),
        ] {
            let mut p = plan(&c, None, None);
            p.accel = accel;
            assert!(joined(&qemu_args(&p).unwrap()).contains(want), "{accel}");
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
            line.starts_with("console=ttyS0 panic=-1 loglevel=7 nokaslr sched_verbose foo=1 "),
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
        assert!(e.to_string().contains("would be 4092 bytes"), "{e}");
    }
}
