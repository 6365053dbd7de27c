"""Simulator layer: one `make_env(task)` for bullet-safety-gym, safety-gymnasium and metadrive."""
