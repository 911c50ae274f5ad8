from stockcdc.cli import app

app()
