"""What pfntrace learns about the running kernel: BTF, kallsyms, config,
tracefs and statx, each in its own module."""
