from recloop.cli import app

app(prog_name="recloop")
