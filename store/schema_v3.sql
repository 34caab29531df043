-- Version 3: the audit log, one row per mutating API call (accepted or not).
CREATE TABLE audit_log (
  id {{ID}},
  at TEXT NOT NULL,
  account_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  active_iam BIGINT NOT NULL,
  api_key_id BIGINT NOT NULL,
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  operation TEXT NOT NULL,
  status INTEGER NOT NULL
);
CREATE INDEX audit_log_account ON audit_log (account_id, id);
