from setuptools import find_packages, setup

setup(
    name="pfntrace",
    version="0.1.0",
    description="See what write faults on a DAX mount really do: eBPF probes on the "
                "write-protect fault path, correlated with file timestamps",
    packages=find_packages(include=["pfntrace", "pfntrace.*"]),
    package_data={"pfntrace": ["bpf/*.h", "bpf/*.c", "lab/guest/*", "lab/bugmod/*"]},
    python_requires=">=3.9",
    # bcc is not on this list on purpose: the package of that name on the
    # Python package index is unrelated.  It comes from Debian's
    # python3-bpfcc (scripts/setup.sh), seen through --system-site-packages.
    install_requires=["click>=8", "rich>=12", "cffi>=1.15", "prometheus_client>=0.16"],
    extras_require={"test": ["pytest>=7", "ruff>=0.17"]},
    entry_points={"console_scripts": ["pfntrace=pfntrace.cli:main"]},
)
