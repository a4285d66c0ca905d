"""The commands of the command line, one module each: what a command does with its parsed flags and what it
prints. parser.py declares every command's flags and help; cli.py parses, runs the command and turns a mistake
into one line and an exit code. A command module imports what its command needs inside its function, so
starting one command never loads another's libraries (``predict`` loads nothing of training)."""
