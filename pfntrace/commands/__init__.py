"""pfntrace's subcommands, one module each (module attribute `command`)."""

# name -> module; cli.py imports a module only when its command is used, so
# `pfntrace lab run` does not pay for bcc or rich imports under emulation.
COMMANDS = {
    "lab": "pfntrace.commands.lab",
    "record": "pfntrace.commands.record",
    "report": "pfntrace.commands.report",
    "check": "pfntrace.commands.check",
    "doctor": "pfntrace.commands.doctor",
    "top": "pfntrace.commands.top",
    "exporter": "pfntrace.commands.exporter",
}
