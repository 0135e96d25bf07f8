"""qos-hooks: libvirt and VDSM hooks that give virtual machines real QoS.

Keep this module import-free: it is imported by every hook executable, and
hook start-up time is measured (bench/bench_before_vm_start.py).
"""

__version__ = "0.1.0"
