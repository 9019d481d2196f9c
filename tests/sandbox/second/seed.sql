-- Seed rows for the second sandbox database (schema at revision a2).
BEGIN;
INSERT INTO notes (id, author, body, mood, created_at) VALUES
    (1, 'Dana', 'Waited for the setup instead of chasing the move.', 'calm', '2026-03-10T08:00:00Z'),
    (2, 'Émile', 'Doublé la taille après une perte : à ne pas refaire.', 'tense', '2026-03-10T13:20:00Z'),
    (3, 'Dana', 'Closed early; the plan said hold.', 'restless', '2026-03-11T15:45:00Z'),
    (4, 'Kenji', 'No trades today. Fine.', 'calm', '2026-03-12T09:10:00Z');
SELECT setval(pg_get_serial_sequence('notes', 'id'), 4);
COMMIT;
