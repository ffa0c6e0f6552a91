"""A stand-in for the EnergyCAP REST API, served over real HTTP on loopback.

It is a sandbox and says so on every answer (header ``X-EnergyCAP-Sandbox: 1``). Run it with
``python -m kickouts.sandbox``; start it from Python with ``kickouts.sandbox.process.start_sandbox``
and steer it with ``kickouts.sandbox.control.SandboxControl``. Nothing in this package imports
Django: it is its own process, shared by every dashboard process that talks to it.
"""
