from qos_hooks.cli.main import run

run()
