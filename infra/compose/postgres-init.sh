#!/usr/bin/env bash
# Creates the stack's two databases, each owned by its own login role:
#   - the source database (the application DB that `ingest tables` reads), and
#   - Prefect's database (PREFECT_API_DATABASE_CONNECTION_URL of prefect-server).
# The postgres image runs this once from /docker-entrypoint-initdb.d on an empty data directory;
# it is idempotent, so it can also be run by hand (or by the tests) against any server, with the
# usual PGHOST/PGPORT/PGPASSWORD variables.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v sources_db="${SOURCES_DB:-sources}" \
  -v sources_user="${SOURCES_DB_USER:-sources}" \
  -v sources_password="${SOURCES_DB_PASSWORD:?set SOURCES_DB_PASSWORD}" \
  -v prefect_db="${PREFECT_DB:-prefect}" \
  -v prefect_user="${PREFECT_DB_USER:-prefect}" \
  -v prefect_password="${PREFECT_DB_PASSWORD:?set PREFECT_DB_PASSWORD}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'sources_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'sources_user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'sources_user', :'sources_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'sources_db', :'sources_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'sources_db') \gexec

SELECT format('CREATE ROLE %I LOGIN', :'prefect_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'prefect_user') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'prefect_user', :'prefect_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'prefect_db', :'prefect_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'prefect_db') \gexec

-- Prefect's migrations use trigram indexes; create the extension as superuser up front.
\connect :"prefect_db"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
