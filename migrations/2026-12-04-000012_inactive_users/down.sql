DROP INDEX users_inactive_idx;
