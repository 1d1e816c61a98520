"""``autoresume enable|disable|status``: what continues, at boot, the runs a restart ended."""

from __future__ import annotations

import argparse
import getpass

from plainbox_like.cli import output
from plainbox_like.cli.options import repository
from plainbox_like.maintain import autoresume
from plainbox_like.text import clean


def cmd_autoresume(args: argparse.Namespace) -> int:
    root = repository(args).root
    boot = autoresume.Boot.detect()
    if args.action == "enable":
        for line in autoresume.enable(root, boot):
            output.say(clean(line))
        output.say(f"at boot, the sessions of {clean(root)} that a restart ended continue by themselves{_when(boot)}")
    elif args.action == "disable":
        done = autoresume.disable(root, boot)
        for line in done:
            output.say(clean(line))
        if not done:
            output.say(f"nothing was installed for {clean(root)}: nothing to remove")
    else:
        problems: list[str] = []
        found = autoresume.status(boot, problems)
        for problem in problems:
            output.warn(clean(problem))
        for item in found:
            state = f" ({clean(item.state)})" if item.state else ""
            mine = "  [this repository]" if item.repository == root else ""
            print(f"{item.kind}{state}: {clean(item.where)}  for {clean(item.repository or '?')}{mine}")
        enabled = any(item.repository == root for item in found)
        how = "systemd runs" if boot.systemd else "systemd does not run: enable would use the crontab"
        output.say(f"{clean(root)}: autoresume {'enabled' if enabled else 'not enabled'} ({how})")
    return 0


def _when(boot: autoresume.Boot) -> str:
    if not boot.systemd:
        return " (crontab @reboot)"
    if boot.system:
        return " (systemd system unit)"
    user = getpass.getuser()
    return (
        f" (systemd user unit: it starts when {user}'s user manager does, at login, or at boot once "
        f"'loginctl enable-linger {user}' was run)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "autoresume",
        help="continue the runs a restart ended at boot (enable, disable, status)",
        description="Install, remove or show what runs 'plainbox-like resume --autoresume' for this repository "
        "at boot, so that a session stopped by a job flagged noreturn (a reboot test) continues by itself: a "
        "systemd unit where systemd runs (a system unit for root, else a user unit), else an @reboot line in "
        "the crontab. Nothing is installed without 'enable'; 'disable' removes exactly what it installed.",
    )
    parser.add_argument("action", choices=("enable", "disable", "status"), metavar="ACTION",
                        help="enable, disable or status; enable: install it for this repository; disable: remove it; status: show what is "
                        "installed, and for which repository")
    parser.set_defaults(func=cmd_autoresume)
