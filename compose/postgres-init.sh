# compose/postgres-init.sh -- sourced once by the postgres image's entrypoint,
# when the data volume is new (/docker-entrypoint-initdb.d). Creates the two
# roles of README: Security: sensorflow_owner owns the database and runs
# storage's migrations; sensorflow_storage may connect, and storage's
# migrations grant it INSERT on its tables and nothing more.
# The superuser (POSTGRES_USER) stays for administration only.
: "${PG_OWNER_PASSWORD:?is not set (set it in .env)}"
: "${PG_STORAGE_PASSWORD:?is not set (set it in .env)}"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
  -v owner_pw="$PG_OWNER_PASSWORD" -v storage_pw="$PG_STORAGE_PASSWORD" \
  -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE sensorflow_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE sensorflow_storage LOGIN PASSWORD :'storage_pw';
ALTER DATABASE :"db" OWNER TO sensorflow_owner;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO sensorflow_storage;
SQL
