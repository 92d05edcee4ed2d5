from kit.migrate import run_env
from services.quotes.models import metadata

run_env(metadata)
