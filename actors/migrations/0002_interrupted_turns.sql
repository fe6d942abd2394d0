-- An agent line cut short by the callee (barge-in) is kept, marked, with the part that was
-- heard; older rows were never interrupted.
ALTER TABLE transcript_turns ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
