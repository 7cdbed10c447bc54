-- crusades store, schema 2: an evaluation names the validator that ran it (its hotkey; NULL
-- for a competitor's own `crusades bench` and for evaluations stored before schema 2).
ALTER TABLE evaluations ADD COLUMN validator TEXT;

CREATE INDEX evaluations_validator ON evaluations (validator);
