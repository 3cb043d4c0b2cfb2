-- max_rate: create_profile and alter_profile take it, webhook.profiles
-- shows it, bad values are refused (the pace on the wire: TAP 029_pacing).
\set SHOW_CONTEXT never
\set VERBOSITY default

SELECT webhook.define_event('pace.created', 'tickets', 'insert', object => 'ticket') > 0 AS defined;
SELECT webhook.create_profile('pace', 'http://127.0.0.1:9/pace', ARRAY['pace.created'],
                              max_rate => 2.5, enabled => false) > 0 AS created;
SELECT max_rate FROM webhook.profiles WHERE name = 'pace';
SELECT webhook.alter_profile('pace', max_rate => 100);
SELECT max_rate FROM webhook.profiles WHERE name = 'pace';
-- NULL leaves it, 0 lifts it
SELECT webhook.alter_profile('pace', timeout => '5 seconds');
SELECT max_rate FROM webhook.profiles WHERE name = 'pace';
SELECT webhook.alter_profile('pace', max_rate => 0);
SELECT max_rate FROM webhook.profiles WHERE name = 'pace';

-- bad values, refused with nothing changed
SELECT webhook.alter_profile('pace', max_rate => -1);
SELECT webhook.alter_profile('pace', max_rate => 100001);
SELECT webhook.alter_profile('pace', max_rate => 'NaN');
SELECT webhook.alter_profile('pace', max_rate => 1e-14);
SELECT webhook.alter_profile('pace', max_rate => 1e-400);
SELECT webhook.alter_profile('pace', max_rate => 0.001);
SELECT max_rate AS the_least_taken FROM webhook.profiles WHERE name = 'pace';
SELECT webhook.alter_profile('pace', max_rate => 0);
SELECT webhook.create_profile('pace2', 'http://127.0.0.1:9/pace', ARRAY['pace.created'], max_rate => 0);
UPDATE webhook.profile SET max_rate = 0 WHERE name = 'pace';
SELECT max_rate IS NULL AS unchanged FROM webhook.profiles WHERE name = 'pace';
SELECT count(*) AS not_made FROM webhook.profiles WHERE name = 'pace2';

SELECT webhook.drop_profile('pace');
SELECT webhook.drop_event('pace.created');
