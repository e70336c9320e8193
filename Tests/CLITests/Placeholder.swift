// CLITests: tests for this module live beside this file.
