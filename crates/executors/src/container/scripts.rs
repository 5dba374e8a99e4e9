//! The scripts run inside containers, and the text the executor sends them: the waiting shell
//! of a warm container (see `pool`) and the script it `eval`s, the agent of a resident container
//! (see `resident`) and the framed script it runs per command. Pure text, tested by running it
//! under `sh` on the host.

/// Where the FIFO is inside the container.
pub const CONTROL_TARGET: &str = "/.conductor";

/// The waiting shell: reads one script from the FIFO, then `eval`s it (the script ends in
/// `exec`, so the command replaces the shell). Exits 125 if the FIFO cannot be read.
pub const WAITING_SHELL: &str = "c=$(cat /.conductor/command) || exit 125; eval \"$c\"";

/// The agent of a resident container (see `resident`). Exits 125 if a FIFO cannot be
/// opened or a script cannot be read.
pub const RESIDENT_AGENT: &str = "exec 3<>/.conductor/command 4>/.conductor/status || exit 125
echo ready >&4
while read -r n <&3; do
  c=$(head -c \"$n\" <&3) || exit 125
  (eval \"$c\") </dev/null >/.conductor/stdout 2>/.conductor/stderr 3>&- 4>&-
  echo \"$?\" >&4
done
exit 125
";

/// `'text'` for `sh`, whatever `text` holds.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The script a warm container runs: change to `cwd` (after the workspace was bound, so the
/// path now reaches it) and `exec` `cmd` (the same `env -i …` a cold container runs).
pub fn once_script(cwd: &str, cmd: &[String]) -> String {
    let mut script = format!("cd {} || exit 125\nexec", shell_quote(cwd));
    for word in cmd {
        script.push(' ');
        script.push_str(&shell_quote(word));
    }
    script.push('\n');
    script
}

/// The script the agent runs for one command: as `user` with no supplementary groups, in
/// `cwd` (after the workspace was bound, so the path now reaches it), `exec` `cmd`. Exits 125
/// if `cwd` cannot be entered.
pub fn resident_script(user: (u32, u32), cwd: &str, cmd: &[String]) -> String {
    let mut script = format!(
        "exec setpriv --reuid={} --regid={} --clear-groups -- /bin/sh -c 'cd \"$1\" || exit 125; shift; exec \"$@\"' sh {}",
        user.0,
        user.1,
        shell_quote(cwd)
    );
    for word in cmd {
        script.push(' ');
        script.push_str(&shell_quote(word));
    }
    script.push('\n');
    script
}

/// `script` as the agent reads it: its length in bytes on a line, then the script.
pub fn frame(script: &str) -> String {
    format!("{}\n{script}", script.len())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn scripts_quote_every_word() {
        let cmd = [
            "/usr/bin/env",
            "-i",
            "--",
            "A=it's",
            "sh",
            "-c",
            "echo $A\nexit 3",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            once_script("/workspace", &cmd),
            "cd '/workspace' || exit 125\nexec '/usr/bin/env' '-i' '--' 'A=it'\\''s' 'sh' '-c' 'echo $A\nexit 3'\n"
        );
    }

    #[test]
    fn scripts_run_as_written_by_sh() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = ["printf", "%s|", "a b", "it's", "$HOME", "new\nline", ""]
            .map(str::to_owned)
            .to_vec();
        let script = once_script(&dir.path().display().to_string(), &cmd);
        let agent = WAITING_SHELL.replace("cat /.conductor/command", "cat");
        let output = std::process::Command::new("sh")
            .args(["-c", &agent])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            "a b|it's|$HOME|new\nline||"
        );
    }

    #[test]
    fn frames_count_bytes() {
        assert_eq!(frame("échô\n"), "7\néchô\n");
    }

    #[test]
    fn scripts_switch_user_then_directory_then_exec() {
        let cmd = ["/usr/bin/env", "-i", "--", "A=it's", "sh", "-c", "exit 3"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            resident_script((7, 8), "/work space", &cmd),
            "exec setpriv --reuid=7 --regid=8 --clear-groups -- /bin/sh -c 'cd \"$1\" || exit 125; shift; exec \"$@\"' sh '/work space' '/usr/bin/env' '-i' '--' 'A=it'\\''s' 'sh' '-c' 'exit 3'\n"
        );
    }

    /// The agent as the container runs it, on the host with its FIFOs in a temporary
    /// directory: two commands in a row, each with its own output and status, run as another
    /// user who can neither read the command FIFO nor write the status one.
    #[test]
    fn the_agent_runs_one_command_after_another_as_the_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: switching users needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control");
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&control).unwrap();
        std::fs::create_dir(&cwd).unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        for fifo in ["command", "status", "stdout", "stderr"] {
            nix::unistd::mkfifo(
                &control.join(fifo),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
        }
        let control_text = control.display().to_string();
        let mut agent = std::process::Command::new("sh")
            .args(["-c", &RESIDENT_AGENT.replace("/.conductor", &control_text)])
            .spawn()
            .unwrap();
        let mut status =
            std::io::BufReader::new(std::fs::File::open(control.join("status")).unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut status, &mut line).unwrap();
        assert_eq!(line, "ready\n");
        let nobody = (65534, 65534);
        for (text, expected_out, expected_status) in [
            (
                format!("id -u; echo err >&2; cat {control_text}/command; exit 3"),
                "65534\n",
                "3\n",
            ),
            (
                format!("pwd; echo 0 > {control_text}/status || exit 4"),
                &*format!("{}\n", cwd.display()),
                "4\n",
            ),
        ] {
            let read = |name: &str| {
                let path = control.join(name);
                std::thread::spawn(move || {
                    let mut text = String::new();
                    std::fs::File::open(path)
                        .unwrap()
                        .read_to_string(&mut text)
                        .unwrap();
                    text
                })
            };
            let (stdout, stderr) = (read("stdout"), read("stderr"));
            let cmd = ["sh", "-c", &text].map(str::to_owned).to_vec();
            std::fs::OpenOptions::new()
                .write(true)
                .open(control.join("command"))
                .unwrap()
                .write_all(
                    frame(&resident_script(nobody, &cwd.display().to_string(), &cmd)).as_bytes(),
                )
                .unwrap();
            line.clear();
            std::io::BufRead::read_line(&mut status, &mut line).unwrap();
            assert_eq!(line, expected_status);
            assert_eq!(stdout.join().unwrap(), expected_out);
            let stderr = stderr.join().unwrap();
            assert!(
                stderr.contains("Permission denied") || stderr == "err\n",
                "{stderr}"
            );
        }
        agent.kill().unwrap();
        agent.wait().unwrap();
    }
}
