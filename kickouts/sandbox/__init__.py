"""A stand-in for the EnergyCAP REST API, served over real HTTP on loopback.

It is a sandbox and says so on every answer (header ``X-EnergyCAP-Sandbox: 1``). Run it with
``python -m kickouts.sandbox``; start it from Python with ``kickouts.sandbox.process.start_sandbox``
and steer it with ``kickouts.sandbox.control.SandboxControl``. Nothing in this package imports
Django: it is its own process, shared by every dashboard process that talks to it.
"""

# start_sandbox hands the key to the child in this variable rather than on its command line,
# which `ps` shows to every user of the machine.
API_KEY_VARIABLE = "ENERGYCAP_SANDBOX_API_KEY"
