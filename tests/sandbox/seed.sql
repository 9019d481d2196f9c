-- Seed rows for the sandbox database (schema at migration 0002).
BEGIN;
INSERT INTO users (id, name, locale) VALUES
    (1, 'Alice', 'en'),
    (2, 'Борис', 'ru'),
    (3, 'Chen', 'en');
SELECT setval(pg_get_serial_sequence('users', 'id'), 3);
INSERT INTO messages (id, user_id, body, created_at) VALUES
    (1, 1, 'Closed the EURUSD trade too early again.', '2026-01-10T08:00:00Z'),
    (2, 1, 'Breathing exercise helped before the open.', '2026-01-10T09:30:00Z'),
    (3, 2, 'Сегодня без импульсивных сделок.', '2026-01-11T07:15:00Z'),
    (4, 3, 'Stuck to the plan: two trades, both by the rules.', '2026-01-11T16:45:00Z'),
    (5, 2, 'Тревога перед отчётом по занятости.', '2026-01-12T06:05:00Z');
SELECT setval(pg_get_serial_sequence('messages', 'id'), 5);
COMMIT;
