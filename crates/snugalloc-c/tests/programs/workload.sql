-- Inserts, indexes and queries whose results the test compares with the
-- same script run under glibc malloc.
PRAGMA cache_size = -20000;
CREATE TABLE item(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, payload BLOB, price REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO item SELECT x, x % 97, printf('item-%07d-%s', x, substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 26)),
       zeroblob(x % 700), (x * 7919 % 100003) / 100.0 FROM c;
CREATE INDEX item_grp ON item(grp, price);
CREATE INDEX item_name ON item(name);
SELECT count(*), sum(length(payload)), round(sum(price), 2) FROM item;
SELECT grp, count(*), round(avg(price), 3), max(name) FROM item GROUP BY grp ORDER BY grp LIMIT 10;
SELECT name FROM item WHERE name BETWEEN 'item-0100000' AND 'item-0100010' ORDER BY name;
UPDATE item SET payload = zeroblob(1000 + id % 3000), name = name || '-u' WHERE id % 5 = 0;
DELETE FROM item WHERE id % 7 = 0;
SELECT count(*), sum(length(payload)), count(DISTINCT grp) FROM item;
CREATE TABLE agg AS SELECT grp, group_concat(name, ',') AS names FROM item GROUP BY grp;
SELECT grp, length(names) FROM agg ORDER BY length(names) DESC LIMIT 5;
SELECT a.grp, count(*) FROM item a JOIN item b ON a.grp = b.grp AND b.id = a.id + 97 GROUP BY a.grp ORDER BY 2 DESC, 1 LIMIT 5;
REINDEX;
VACUUM;
SELECT count(*) FROM item WHERE price > 500;
PRAGMA integrity_check;
