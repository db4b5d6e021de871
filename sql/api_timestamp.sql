--
-- api_timestamp(): the API's timestamps carry no zone and are UTC; so is a
-- date alone.  Only an offset or Z after a time of day is a zone.  The
-- session's time zone never changes what is stored.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS sac_webhook;
RESET client_min_messages;
SET TimeZone = 'America/Sao_Paulo';
SELECT v AS value, sac_webhook.api_timestamp(v) AT TIME ZONE 'UTC' AS utc
  FROM (VALUES ('2024-01-01'), ('2024-08-07'), ('2024-12-31'),
               ('2024-08-07T13:42:45'), ('2024-08-07 13:42:45'), ('2024-08-07T13:42'),
               ('2024-08-07T14:21:58.024000'), ('2024-08-09T13:30:38.609142Z'),
               ('2024-08-09T13:30:38z'), ('2024-08-07T13:42:45-03:00'), ('2024-08-07T13:42:45+0530'),
               ('2024-08-07T13:42:45 +02'), ('2024-08-07T13:42-03'), (NULL)) t(v);
SET TimeZone = 'Asia/Tokyo';
SELECT sac_webhook.api_timestamp('2024-01-01') AT TIME ZONE 'UTC' AS date_only,
       sac_webhook.api_timestamp('2024-08-07T13:42:45') AT TIME ZONE 'UTC' AS no_zone;
RESET TimeZone;
-- not a timestamp: an error of class 22
SELECT sac_webhook.api_timestamp('someday');
