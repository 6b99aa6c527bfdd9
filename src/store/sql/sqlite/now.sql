-- The database clock, in the format the migrations use.
SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
