-- trainyard schema, version 1. Written in the SQL that SQLite and PostgreSQL share, except for
-- the id column type, which the store substitutes per dialect ({{ID}}). Times are UTC text in a
-- fixed-width RFC 3339 form, so that they sort as text.

CREATE TABLE users (
  id {{ID}},
  name TEXT NOT NULL,
  email TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL
);

CREATE TABLE accounts (
  id {{ID}},
  owner_user_id BIGINT NOT NULL REFERENCES users(id),
  name TEXT NOT NULL,
  currency TEXT NOT NULL,
  created_at TEXT NOT NULL
);

CREATE TABLE memberships (
  id {{ID}},
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  user_id BIGINT NOT NULL REFERENCES users(id),
  role TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (account_id, user_id)
);

CREATE TABLE api_keys (
  id {{ID}},
  user_id BIGINT NOT NULL REFERENCES users(id),
  key_hash TEXT NOT NULL UNIQUE,
  token_hash TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);

CREATE TABLE projects (
  id {{ID}},
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  name TEXT NOT NULL,
  is_default INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  UNIQUE (account_id, name)
);

CREATE TABLE ssh_keys (
  id {{ID}},
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  label TEXT NOT NULL,
  public_key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (account_id, fingerprint)
);

CREATE TABLE clusters (
  id {{ID}},
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  project_id BIGINT NOT NULL REFERENCES projects(id),
  location TEXT NOT NULL,
  name TEXT NOT NULL,
  created_by BIGINT NOT NULL REFERENCES users(id),
  sku_id BIGINT NOT NULL,
  plan_id BIGINT NOT NULL,
  status TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  script_added INTEGER NOT NULL,
  lifecycle_script TEXT NOT NULL,
  mounts TEXT NOT NULL,
  image_version_id BIGINT NOT NULL,
  workers INTEGER NOT NULL,
  ssh_keys TEXT NOT NULL,
  reserved_ip_id BIGINT NOT NULL DEFAULT 0,
  worker_restart_gen BIGINT NOT NULL DEFAULT 0,
  controller_restart_gen BIGINT NOT NULL DEFAULT 0,
  network_gen BIGINT NOT NULL DEFAULT 1,
  current_action_id BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX clusters_scope ON clusters (account_id, project_id, location, status);

CREATE TABLE security_groups (
  id {{ID}},
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  project_id BIGINT NOT NULL REFERENCES projects(id),
  location TEXT NOT NULL,
  name TEXT NOT NULL,
  description TEXT NOT NULL,
  rules TEXT NOT NULL,
  created_at TEXT NOT NULL
);

CREATE TABLE cluster_security_groups (
  cluster_id BIGINT NOT NULL REFERENCES clusters(id),
  group_id BIGINT NOT NULL REFERENCES security_groups(id),
  PRIMARY KEY (cluster_id, group_id)
);

CREATE TABLE reserved_ips (
  id {{ID}},
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  project_id BIGINT NOT NULL REFERENCES projects(id),
  location TEXT NOT NULL,
  address TEXT NOT NULL,
  status TEXT NOT NULL,
  cluster_id BIGINT NOT NULL DEFAULT 0,
  reserved_by BIGINT NOT NULL REFERENCES users(id),
  created_at TEXT NOT NULL,
  UNIQUE (location, address)
);

CREATE TABLE nodes (
  id {{ID}},
  cluster_id BIGINT NOT NULL REFERENCES clusters(id),
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  idx INTEGER NOT NULL,
  created_at TEXT NOT NULL,
  UNIQUE (cluster_id, name)
);

CREATE TABLE actions (
  id {{ID}},
  cluster_id BIGINT NOT NULL REFERENCES clusters(id),
  account_id BIGINT NOT NULL REFERENCES accounts(id),
  type TEXT NOT NULL,
  node_changing INTEGER NOT NULL,
  status TEXT NOT NULL,
  params TEXT NOT NULL,
  plan TEXT NOT NULL,
  requested_by BIGINT NOT NULL REFERENCES users(id),
  active_iam BIGINT NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  -- Decided when the work ends, before compensation (releasing drains, removing nodes): a
  -- restart then finishes the action with this outcome instead of doing the work again.
  outcome TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  started_at TEXT,
  finished_at TEXT
);
CREATE INDEX actions_cluster ON actions (cluster_id, id);
CREATE INDEX actions_open ON actions (status);
-- The store's own guarantee that a cluster runs at most one node-changing action at a time,
-- whatever the code above it does.
CREATE UNIQUE INDEX actions_one_node_changing ON actions (cluster_id)
  WHERE node_changing = 1 AND status IN ('queued', 'running');

CREATE TABLE action_steps (
  action_id BIGINT NOT NULL REFERENCES actions(id),
  node TEXT NOT NULL,
  batch INTEGER NOT NULL,
  status TEXT NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  started_at TEXT,
  finished_at TEXT,
  PRIMARY KEY (action_id, node)
);

CREATE TABLE action_events (
  id {{ID}},
  action_id BIGINT NOT NULL REFERENCES actions(id),
  at TEXT NOT NULL,
  node TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX action_events_action ON action_events (action_id, id);

CREATE TABLE idempotency_keys (
  user_id BIGINT NOT NULL REFERENCES users(id),
  idem_key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  status_code INTEGER NOT NULL,
  response TEXT NOT NULL,
  response_header TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY (user_id, idem_key)
);
