"""Reading a session back for people: status rules and summaries, replay of io-logs.

Above ``run``: it may use the run's rules, and nothing that runs imports it.
"""
