//! Generated documentation of the command line: the man page and shell completions,
//! both straight from the clap definition so they cannot drift from it.

use clap::CommandFactory;
use std::{io::Write, process::ExitCode};

/// backscatter-milter(8) in roff.
pub fn man() -> ExitCode {
    let cmd = crate::Cli::command();
    let page = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut out = Vec::new();
    let rendered = page
        .render_title(&mut out)
        .and_then(|()| page.render_name_section(&mut out))
        .and_then(|()| page.render_synopsis_section(&mut out))
        .and_then(|()| page.render_description_section(&mut out))
        .and_then(|()| page.render_options_section(&mut out))
        .and_then(|()| {
            out.extend_from_slice(commands_section(&cmd).as_bytes());
            out.extend_from_slice(SEE_ALSO.as_bytes());
            std::io::stdout().write_all(&out)
        });
    match rendered {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backscatter-milter: man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// roff text: backslashes and hyphens escaped, a leading dot or quote guarded.
fn roff(s: &str) -> String {
    let e = s.replace('\\', "\\e").replace('-', "\\-");
    if e.starts_with('.') || e.starts_with('\'') {
        format!("\\&{e}")
    } else {
        e
    }
}

/// COMMANDS: every visible subcommand with its usage, description and options.
fn commands_section(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut sub = sub
            .clone()
            .bin_name(format!("backscatter-milter {}", sub.get_name()));
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ");
        out += &format!(".SS {}\n.B {}\n.PP\n", roff(sub.get_name()), roff(usage));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out += &format!("{}\n", roff(&about.to_string()));
        }
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help")
        {
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(l), _) => format!("\\fB\\-\\-{}\\fR", roff(l)),
                (None, Some(c)) => format!("\\fB\\-{c}\\fR"),
                (None, None) => format!(
                    "\\fI{}\\fR",
                    roff(&arg.get_id().as_str().to_ascii_uppercase())
                ),
            };
            let value = if arg.get_long().is_some() && arg.get_action().takes_values() {
                let names = arg
                    .get_value_names()
                    .map(|v| v.join(" "))
                    .unwrap_or_default();
                format!(" \\fI{}\\fR", roff(&names))
            } else {
                String::new()
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            out += &format!(".TP\n{name}{value}\n{}\n", roff(&help));
        }
    }
    out
}

const SEE_ALSO: &str = r#".SH FILES
.TP
\fI/etc/backscatter\-milter/milter.toml\fR
The configuration, see \fBmilter.toml\fR(5).
.TP
\fI/etc/backscatter\-milter/batv.keys\fR
The BATV keys, mode 0600, owned by the service user.
.TP
\fI/var/lib/backscatter\-milter/\fR
The sent\-message ledger.
.SH SIGNALS
SIGHUP re\-reads the configuration and the key file (a broken file keeps the running
ones). SIGTERM stops accepting connections, lets messages in flight finish and exits 0.
.SH EXIT STATUS
0 on success, non\-zero on an error (a configuration error is named with its key and line).
.SH SEE ALSO
\fBmilter.toml\fR(5), \fBpostconf\fR(5), /usr/share/doc/backscatter\-milter/README.md
"#;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(
        shell,
        &mut cmd,
        "backscatter-milter",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}
