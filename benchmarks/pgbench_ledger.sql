-- The database ceiling: one ledger-like transaction (lock a balance row, update it, insert two entries).
\set aid random(1, 100000)
BEGIN;
SELECT balance FROM bench_accounts WHERE id = :aid FOR UPDATE;
UPDATE bench_accounts SET balance = balance + 10 WHERE id = :aid;
INSERT INTO bench_entries (account_id, amount) VALUES (:aid, 10), (0, -10);
END;
