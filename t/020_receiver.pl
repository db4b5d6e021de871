
# Copyright (c) sac_webhook authors

# Tests for sac_webhook_receiver, the HTTP program in front of
# sac_webhook.receive(): routing and secrets (compared as sent, before any
# percent-decoding), body limits, answers only after commit, grouping under
# concurrency, database outages and reconnection, slow clients (a whole
# request bounded by --timeout, slow clients evicted when connections run
# short), HMAC signatures, graceful shutdown, the access log's discretion,
# payloads past the database's limits (400, not 503), and bursts for a few
# resources (no deadlocks between grouped transactions; a deadlock victim
# is retried).
#
# The binary is taken from $SAC_WEBHOOK_RECEIVER or else found on PATH
# (PGXS installcheck puts the PostgreSQL bindir there).  When the real
# extension is not installed (or SAC_WEBHOOK_TEST_STANDIN is set), a
# stand-in sac_webhook.receive() with the same outward behaviour is used.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(encode_base64);

my $receiver_bin = $ENV{SAC_WEBHOOK_RECEIVER} // 'sac_webhook_receiver';
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $receiver_bin, '--version' ], '>', \$out, '2>', \$err)
	  or BAIL_OUT("cannot run $receiver_bin (set SAC_WEBHOOK_RECEIVER): $err");
	like($out, qr/^sac_webhook_receiver /, 'receiver reports its version');
}

my $secret = 'tap-secret-0123456789abcdef';
my $hmac_key1 = 'whsec_' . encode_base64('first-hmac-key-0123456789ab', '');
my $hmac_key2 = 'whsec_' . encode_base64('second-hmac-key-0123456789a', '');

# ------------------------------------------------------------------
# The database
# ------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('receiver');
$node->init;
my $real_extension = !$ENV{SAC_WEBHOOK_TEST_STANDIN}
  && -f $node->config_data('--sharedir') . '/extension/sac_webhook.control';
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'sac_webhook'")
  if $real_extension;
$node->start;

# The stand-in: the same outward behaviour as receive(), on PostgreSQL's
# own jsonb input.
my $standin_sql = q{
CREATE SCHEMA sac_webhook;
CREATE TABLE sac_webhook.inbox (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE FUNCTION sac_webhook.receive(p text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
	j jsonb := p::jsonb;
	r bigint;
BEGIN
	IF j ? 'topic' IS NOT TRUE THEN
		RAISE EXCEPTION 'invalid webhook payload'
			USING ERRCODE = '22023', DETAIL = 'Field "topic" is missing.';
	END IF;
	IF j->>'topic' NOT IN ('sac_ticket', 'sac_message') THEN
		RAISE EXCEPTION 'unknown topic'
			USING ERRCODE = '22023', DETAIL = 'Field "topic" must be sac_ticket or sac_message.';
	END IF;
	INSERT INTO sac_webhook.inbox (payload) VALUES (j) RETURNING id INTO r;
	RETURN r;
END
$$;
REVOKE ALL ON FUNCTION sac_webhook.receive(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA sac_webhook TO sac_webhook_receiver;
GRANT EXECUTE ON FUNCTION sac_webhook.receive(text) TO sac_webhook_receiver;
};

if ($real_extension)
{
	$node->safe_psql('postgres', 'CREATE EXTENSION sac_webhook;');
}
else
{
	note 'sac_webhook is not installed: using a stand-in receive()';
	$node->safe_psql('postgres', 'CREATE ROLE sac_webhook_receiver NOLOGIN;');
	$node->safe_psql('postgres', $standin_sql);
}
$node->safe_psql('postgres', 'CREATE ROLE rcv LOGIN IN ROLE sac_webhook_receiver;');
my $inbox = 'sac_webhook.inbox';

sub inbox_count
{
	return $node->safe_psql('postgres', "SELECT count(*) FROM $inbox");
}

# ------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------

# Distinct, valid payloads: every successful POST below stores a new row,
# with the stand-in as with the real (coalescing) receive().
my $uuid_seq = 0;

sub new_uuid
{
	$uuid_seq++;
	return sprintf('%08x-%04x-4%03x-8%03x-%012x',
		int(rand(0xffffffff)), $$ & 0xffff, $uuid_seq & 0xfff,
		int(rand(0xfff)), $uuid_seq);
}
my $tenant = '3b5cf468-c858-404b-9e53-630e3df9d74a';

sub ticket_payload
{
	my ($id) = @_;
	$id //= new_uuid();
	return
	  qq({"data":{"status":"CREATION","params":{"id":"$id"},"resource":"/v0/tickets/$id"},"tenant_id":"$tenant","topic":"sac_ticket"});
}

# One HTTP request with curl.  Returns a hash: code (0 when there was no
# answer), headers (lower-case names), body, elapsed seconds.
sub http
{
	my ($base, %a) = @_;
	my @cmd = (
		'curl', '-s', '-i', '--max-time', $a{max_time} // 15,
		'-X', $a{method} // 'POST');
	if (defined $a{body})
	{
		push @cmd, '--data-binary', '@-', '-H',
		  'Content-Type: application/json';
	}
	push @cmd, '-H', $_ foreach @{ $a{headers} // [] };
	push @cmd, $base . $a{path};

	my ($in, $out, $err) = ($a{body} // '', '', '');
	my $t0 = time;
	IPC::Run::run(\@cmd, '<', \$in, '>', \$out, '2>', \$err);
	my %r = (elapsed => time - $t0, code => 0, headers => {}, body => '');
	# skip interim answers such as "100 Continue"
	while ($out =~ s{^HTTP/[\d.]+ (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n}{}s)
	{
		my ($code, $head) = ($1, $2);
		next if $code =~ /^1/;
		$r{code} = $code;
		foreach my $line (split /\r\n/, $head)
		{
			$r{headers}{ lc $1 } = $2 if $line =~ /^([^:]+):\s*(.*)$/;
		}
		$r{body} = $out;
		last;
	}
	return \%r;
}

sub metric
{
	my ($base, $name) = @_;
	my $r = http($base, method => 'GET', path => '/metrics');
	return $r->{body} =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

# Start a receiver on a free port; returns a hash describing it.  Options
# go to the receiver, except a leading "dbname => NAME" (default postgres).
sub start_receiver
{
	my ($name, @args) = @_;
	my $dbname = 'postgres';
	if (@args && $args[0] eq 'dbname')
	{
		(undef, $dbname, @args) = @args;
	}
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "$PostgreSQL::Test::Utils::log_path/receiver_$name.log";
	my @cmd = (
		$receiver_bin,
		'--listen' => "127.0.0.1:$port",
		'--db' => $node->connstr($dbname) . ' user=rcv',
		'--secret' => $secret,
		@args);
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>>', $log, '2>&1');
	my $rcv = { h => $h, base => "http://127.0.0.1:$port", log => $log };

	# ready when /healthz says a database connection answers
	my $deadline = time + 20;
	while (time < $deadline)
	{
		last if http($rcv->{base}, method => 'GET', path => '/healthz')->{code} == 200;
		sleep 0.1;
	}
	return $rcv;
}

# Stop a receiver with SIGTERM; returns its raw wait status.
sub stop_receiver
{
	my ($rcv) = @_;
	$rcv->{h}->signal('TERM');
	$rcv->{h}->finish;
	return $rcv->{h}->full_result(0);
}

# A psql session that runs "sql" in a transaction it keeps open, holding
# whatever locks that took until told to commit.
sub lock_session
{
	my ($sql) = @_;
	my %s = (in => '', out => '', err => '');
	$s{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', '-' ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err});
	$s{in} .= "BEGIN; $sql SELECT 'locked';\n";
	pump_until($s{h}, IPC::Run::timer(30), \$s{out}, qr/locked/)
	  or die "could not take the locks: $s{err}";
	return \%s;
}

# An exclusive lock on the inbox, so that receive() calls wait and requests
# stay in flight.
sub lock_inbox
{
	return lock_session("LOCK TABLE $inbox;");
}

sub unlock_inbox
{
	my ($s) = @_;
	$s->{in} .= "COMMIT;\n\\q\n";
	$s->{h}->finish;
}

# Start a POST in the background.  The body goes through a file: IPC::Run
# would feed a scalar only when pumped.
my $body_seq = 0;

sub start_post
{
	my ($url, $body, %o) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/body_" . ++$body_seq . '.json';
	append_to_file($file, $body);
	my %c = (out => '');
	$c{h} = IPC::Run::start(
		[   'curl', '-s', '-o', '/dev/null', '-w', $o{write_out} // '%{http_code}',
			'--max-time', $o{max_time} // 30,
			'--data-binary', "\@$file", '-H', 'Content-Type: application/json', $url ],
		'<', '/dev/null', '>', \$c{out});
	return \%c;
}

# Wait until the receiver reports at least $n requests in flight.
sub wait_in_flight
{
	my ($rcv, $n) = @_;
	my $deadline = time + 15;
	while (time < $deadline)
	{
		my $v = metric($rcv->{base}, 'sac_webhook_receiver_requests_in_flight');
		# the /metrics request itself is in flight too
		return 1 if defined $v && $v - 1 >= $n;
		sleep 0.05;
	}
	return 0;
}

# Wait until the receiver reports at least $n requests waiting for a
# database connection.
sub wait_queued
{
	my ($rcv, $n) = @_;
	my $deadline = time + 15;
	while (time < $deadline)
	{
		my $v = metric($rcv->{base}, 'sac_webhook_receiver_queue_length');
		return 1 if defined $v && $v >= $n;
		sleep 0.05;
	}
	return 0;
}

# ------------------------------------------------------------------
# The main receiver
# ------------------------------------------------------------------
my $rcv = start_receiver(
	'main',
	'--max-body' => 4096,
	'--timeout' => 2,
	'--db-connections' => 2,
	'--max-group' => 32,
	'--query-timeout' => 15000);
my $base = $rcv->{base};
my $hook = "/webhooks/$secret";

is(http($base, method => 'GET', path => '/healthz')->{code}, 200, 'healthz 200 when the database answers');
is(http($base, method => 'GET', path => '/healthz')->{body}, "ok\n", 'healthz says ok');

# --- the documented examples are stored ---
my $example_ticket =
  '{"data":{"status":"CREATION","params":{"id":"debde69a-2dbb-427b-b478-6cffd7930ecf"},"resource":"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf"},"tenant_id":"3b5cf468-c858-404b-9e53-630e3df9d74a","topic":"sac_ticket"}';
my $example_message =
  '{"data":{"status":"CREATION","params":{"ticket_id":"debde69a-2dbb-427b-b478-6cffd7930ecf","id":"3b5444b9-6fbb-40fd-b800-6c24176fb5ea"},"resource":"/v0/tickets/debde69a-2dbb-427b-b478-6cffd7930ecf/messages/3b5444b9-6fbb-40fd-b800-6c24176fb5ea"},"tenant_id":"3b5cf468-c858-404b-9e53-630e3df9d74a","topic":"sac_message"}';

my $stored = inbox_count();
my %ids;
foreach my $p ([ ticket => $example_ticket ], [ message => $example_message ])
{
	my $r = http($base, path => $hook, body => $p->[1]);
	is($r->{code}, 200, "example $p->[0] answered 200");
	like($r->{body}, qr/^\{"id":\s*\d+\}$/, "example $p->[0] answer carries the inbox id");
	is($r->{headers}{'content-type'}, 'application/json', "example $p->[0] answer is JSON");
	($ids{ $p->[0] }) = $r->{body} =~ /(\d+)/;
}
$stored += 2;
is(inbox_count(), $stored, 'both examples are in the inbox');
is( $node->safe_psql('postgres', "SELECT count(*) FROM $inbox WHERE id IN ($ids{ticket}, $ids{message})"),
	2, 'the returned ids are the inbox ids');

# --- the header form of the secret ---
{
	my $r = http($base, path => '/webhooks', body => ticket_payload(),
		headers => ["X-Webhook-Secret: $secret"]);
	is($r->{code}, 200, 'secret in X-Webhook-Secret accepted');
	$stored++;
}

# --- invalid payloads: 400 with the database's explanation, nothing stored ---
my $json_string = qr/"(?:[^"\\]|\\.)+"/;
foreach my $case (
	[ 'invalid JSON', '{"topic": sac_ticket' ],
	[ 'empty body', '' ],
	[ 'unknown topic', '{"data":{},"tenant_id":"' . $tenant . '","topic":"sac_refund"}' ],
	[ 'no topic', '{"data":{}}' ])
{
	my ($what, $body) = @$case;
	my $r = http($base, path => $hook, body => $body);
	is($r->{code}, 400, "$what: 400");
	like($r->{body}, qr/^\{"error":"invalid payload","message":$json_string,"detail":($json_string|null)\}$/,
		"$what: JSON error body with message and detail");
}
{
	my $r = http($base, path => $hook, body => "{\"topic\":\"sac_ticket\"\0}");
	is($r->{code}, 400, 'payload with a NUL byte: 400');
}
is(inbox_count(), $stored, 'nothing stored for invalid payloads');

# --- size limits ---
{
	my $big = '{"pad":"' . ('x' x 5000) . '"}';
	my $r = http($base, path => $hook, body => $big);
	is($r->{code}, 413, 'body over --max-body with Content-Length: 413');

	$r = http($base, path => $hook, body => $big, headers => ['Transfer-Encoding: chunked']);
	isnt($r->{code}, 200, 'chunked body over --max-body is cut off');
	is(inbox_count(), $stored, 'nothing stored for oversize bodies');
}

# --- secrets and methods ---
{
	my $p = ticket_payload();
	my $r404 = http($base, path => '/webhooks/not-the-secret', body => $p);
	is($r404->{code}, 404, 'wrong secret in the path: 404');
	my $r404b = http($base, path => '/no/such/path', body => $p);
	is($r404b->{body}, $r404->{body}, 'wrong path secret looks like any unknown path');

	my $r401 = http($base, path => '/webhooks', body => $p, headers => ['X-Webhook-Secret: wrong']);
	is($r401->{code}, 401, 'wrong secret in the header: 401');
	my $r401b = http($base, path => '/webhooks', body => $p);
	is($r401b->{code}, 401, 'missing secret header: 401');
	is($r401b->{body}, $r401->{body}, 'missing and wrong header secret answer alike');

	# the secret is compared with the path as sent, before any decoding
	my $first = sprintf('%%%02X', ord($secret));
	foreach my $case (
		[ 'encoded slash before the secret', "/webhooks%2f$secret" ],
		[ 'encoded upper-case slash before the secret', "/webhooks%2F$secret" ],
		[ 'encoded NUL and junk after the secret', "/webhooks/$secret%00junk" ],
		[ 'encoded first character of the secret', '/webhooks/' . $first . substr($secret, 1) ],
		[ 'encoded last character of the secret',
			'/webhooks/' . substr($secret, 0, -1) . sprintf('%%%02x', ord(substr($secret, -1))) ],
		[ 'secret followed by an encoded slash', "/webhooks/$secret%2F" ],
		[ 'doubled slash before the secret', "/webhooks//$secret" ])
	{
		my ($what, $path) = @$case;
		my $r = http($base, path => $path, body => $p);
		is($r->{code}, 404, "$what: 404");
		is($r->{body}, $r404->{body}, "$what: answered like a wrong secret");
	}
	is(http($base, path => "$hook?source=magalu", body => ticket_payload())->{code},
		200, 'a query string after the right path is ignored');
	$stored++;

	my $r405 = http($base, method => 'GET', path => $hook);
	is($r405->{code}, 405, 'GET on the webhook URL: 405');
	is($r405->{headers}{allow}, 'POST', '405 says Allow: POST');
	is(http($base, method => 'PUT', path => $hook, body => $p)->{code}, 405, 'PUT: 405');
	is(inbox_count(), $stored, 'nothing stored for rejected requests');
}

# --- metrics ---
{
	my $m = http($base, method => 'GET', path => '/metrics');
	is($m->{code}, 200, 'metrics 200');
	like($m->{body}, qr/^sac_webhook_receiver_requests_total\{status="200"\} [1-9]/m, 'metrics count 200s');
	like($m->{body}, qr/^sac_webhook_receiver_requests_total\{status="400"\} [1-9]/m, 'metrics count 400s');
	like($m->{body}, qr/^sac_webhook_receiver_receive_seconds_bucket\{le="\+Inf"\} [1-9]/m,
		'receive_seconds histogram');
	like($m->{body}, qr/^sac_webhook_receiver_receive_seconds_count /m, 'receive_seconds count');
	like($m->{body}, qr/^sac_webhook_receiver_group_size_sum /m, 'group_size histogram');
	like($m->{body}, qr/^sac_webhook_receiver_db_reconnects_total 0$/m, 'reconnect counter');
	like($m->{body}, qr/^sac_webhook_receiver_requests_in_flight \d+$/m, 'in-flight gauge');
}

# --- a slow client is cut off, others are served meanwhile ---
{
	my ($port) = $base =~ /:(\d+)$/;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or die "connect: $!";
	print $sock "POST $hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	  . "Content-Length: 100\r\n\r\n{\"data\":";
	$sock->flush;
	my $t0 = time;

	my $r = http($base, path => $hook, body => ticket_payload());
	is($r->{code}, 200, 'other requests are served while a client stalls');
	$stored++;

	my $sel = IO::Select->new($sock);
	my $closed = 0;
	while (time - $t0 < 8 && $sel->can_read(8 - (time - $t0)))
	{
		my $n = sysread($sock, my $buf, 4096);
		if (!$n)
		{
			$closed = 1;
			last;
		}
	}
	my $elapsed = time - $t0;
	ok($closed, 'stalled client is disconnected');
	cmp_ok($elapsed, '<', 6, "within the --timeout of 2 s (took ${\ sprintf('%.1f', $elapsed)} s)");
	close $sock;
}

# --- grouping: 50 concurrent POSTs, stored in groups of more than one; ---
# --- rejected payloads in the same groups do not fail their neighbours ---
{
	my $lock = lock_inbox();
	my @clients;
	my @invalid;
	for my $i (1 .. 50)
	{
		push @clients, start_post($base . $hook, ticket_payload());
		# every tenth request, a bad one right behind a good one
		push @invalid,
		  start_post($base . $hook,
			$i % 20 ? '{"topic":"sac_nothing","data":{}}' : '{"topic": broken')
		  if $i % 10 == 0;
	}
	ok(wait_in_flight($rcv, 55), '55 requests in flight while the inbox is locked');
	unlock_inbox($lock);
	$_->{h}->finish foreach @clients, @invalid;
	my $ok = grep { $_->{out} eq '200' } @clients;
	is($ok, 50, 'all 50 concurrent valid POSTs answered 200');
	my $bad = grep { $_->{out} eq '400' } @invalid;
	is($bad, 5, 'the 5 invalid ones among them answered 400');
	$stored += 50;
	is(inbox_count(), $stored, 'all 50 valid ones stored, no invalid one');

	my $groups = metric($base, 'sac_webhook_receiver_group_size_count');
	my $singles = metric($base, 'sac_webhook_receiver_group_size_bucket{le="1"}');
	cmp_ok($singles, '<', $groups,
		"some transactions stored more than one request ($singles of $groups were single)");
}

# --- the database goes away: fast 503, then recovery without a restart ---
{
	$node->stop('fast');
	my $r = http($base, path => $hook, body => ticket_payload());
	is($r->{code}, 503, 'database stopped: 503');
	is($r->{headers}{'retry-after'}, '5', '503 carries Retry-After: 5');
	cmp_ok($r->{elapsed}, '<', 2, sprintf('503 came quickly (%.3f s)', $r->{elapsed}));
	$r = http($base, path => $hook, body => ticket_payload());
	is($r->{code}, 503, 'still 503 while the database is down');
	cmp_ok($r->{elapsed}, '<', 2, sprintf('again quickly (%.3f s)', $r->{elapsed}));
	is(http($base, method => 'GET', path => '/healthz')->{code}, 503, 'healthz 503 without a database');

	$node->start;
	my $code = 0;
	my $deadline = time + 20;
	while (time < $deadline)
	{
		$code = http($base, path => $hook, body => ticket_payload())->{code};
		last if $code == 200;
		sleep 0.2;
	}
	is($code, 200, 'POST succeeds again after the database restarted, same receiver process');
	$stored++;
	is(inbox_count(), $stored, 'only the answered-200 request was stored');
	cmp_ok(metric($base, 'sac_webhook_receiver_db_reconnects_total'), '>', 0, 'reconnects counted');
}

# --- graceful shutdown: requests in flight complete, exit status 0 ---
{
	my $lock = lock_inbox();
	my $c = start_post($base . $hook, ticket_payload());
	ok(wait_in_flight($rcv, 1), 'a request is in flight');
	$rcv->{h}->signal('TERM');
	sleep 0.5;
	unlock_inbox($lock);
	$c->{h}->finish;
	is($c->{out}, '200', 'request in flight at SIGTERM completed with 200');
	$stored++;
	$rcv->{h}->finish;
	is($rcv->{h}->full_result(0), 0, 'receiver exited with status 0 after SIGTERM');
	is(inbox_count(), $stored, 'the in-flight request was stored');
}

# --- the log: one line per request, no secrets, no bodies ---
{
	my $log = slurp_file($rcv->{log});
	unlike($log, qr/\Q$secret\E/, 'the secret never appears in the log');
	unlike($log, qr/debde69a/, 'payload content never appears in the log');
	like($log, qr{POST /webhooks/\*\*\* 200 [\d.]+ms id=\d+}, 'request lines show the masked path, status, latency and id');
	like($log, qr{GET /webhooks/\*\*\* 405 }, 'rejected requests are logged too');
	like($log, qr{aborted=timeout}, 'the stalled client is logged as a timeout');
}

# ------------------------------------------------------------------
# Standard Webhooks signatures, with two secrets (rotation)
# ------------------------------------------------------------------
{
	my $hrcv = start_receiver('hmac', '--hmac-secret' => $hmac_key1, '--hmac-secret' => $hmac_key2);
	my $hbase = $hrcv->{base};

	my $sign = sub {
		my ($key, $id, $ts, $body) = @_;
		(my $b64 = $key) =~ s/^whsec_//;
		my $raw = MIME::Base64::decode_base64($b64);
		return 'v1,' . encode_base64(hmac_sha256("$id.$ts.$body", $raw), '');
	};
	my $post = sub {
		my ($key, $ts, %o) = @_;
		my $body = ticket_payload();
		my $id = 'msg_' . new_uuid();
		my $sig = $o{signature} // $sign->($key, $id, $ts, $body);
		return http($hbase, path => $hook, body => $body,
			headers => [ "webhook-id: $id", "webhook-timestamp: $ts", "webhook-signature: $sig" ]);
	};

	is($post->($hmac_key1, int(time))->{code}, 200, 'HMAC: valid signature accepted');
	is($post->($hmac_key2, int(time))->{code}, 200, 'HMAC: signature with the second (rotated) secret accepted');
	$stored += 2;
	is( $post->(undef, int(time), signature => 'v1,' . encode_base64('x' x 32, ''))->{code},
		401, 'HMAC: invalid signature rejected with 401');
	my $wrong_key = 'whsec_' . encode_base64('not-a-configured-key-012345', '');
	is($post->($wrong_key, int(time))->{code}, 401, 'HMAC: signature with an unknown secret rejected');
	is($post->($hmac_key1, int(time) - 600)->{code}, 401, 'HMAC: timestamp 10 minutes old rejected');
	is($post->($hmac_key1, int(time) + 600)->{code}, 401, 'HMAC: timestamp 10 minutes ahead rejected');
	{
		my $id = 'msg_x';
		my $ts = int(time);
		my $body = ticket_payload();
		my $good = $sign->($hmac_key1, $id, $ts, $body);
		is( http($hbase, path => $hook, body => $body,
				headers => [ "webhook-id: $id", "webhook-timestamp: $ts",
					"webhook-signature: v1,bm90LWl0 $good" ])->{code},
			200, 'HMAC: any matching entry of a multi-signature header is enough');
		$stored++;
		is( http($hbase, path => $hook, body => $body . ' ',
				headers => [ "webhook-id: $id", "webhook-timestamp: $ts", "webhook-signature: $good" ])->{code},
			401, 'HMAC: signature over a different body rejected');
	}
	is(http($hbase, path => $hook, body => ticket_payload())->{code}, 401, 'HMAC: unsigned request rejected');
	is(inbox_count(), $stored, 'only correctly signed requests stored');
	is(stop_receiver($hrcv), 0, 'HMAC receiver exited with status 0');
}

# ------------------------------------------------------------------
# Payloads the database cannot take: 4xx, never a 503 to retry for ever
# ------------------------------------------------------------------
my $lrcv = start_receiver('limits', '--timeout' => 4, '--max-connections' => 24, '--http-threads' => 2);
my $lbase = $lrcv->{base};
my ($lport) = $lbase =~ /:(\d+)$/;
{
	# valid, with a 20,000-deep array under a key receive() does not know
	my $deep = ticket_payload();
	$deep =~ s/\}$/,"x":${\ ('[' x 20000)}${\ (']' x 20000)}}/;
	my $r = http($lbase, path => $hook, body => $deep);
	like($r->{code}, qr/^4\d\d$/, "20,000-deep array in an unknown key: 4xx (got $r->{code})");
	like($r->{body}, qr/^\{"error":"invalid payload"/, 'deep array: the answer says the payload is invalid');
	is(inbox_count(), $stored, 'deep array: nothing stored');

	# Whatever receive() makes of it: where the database itself gives up on
	# the nesting (54001, stack depth limit exceeded; made certain here with
	# a small max_stack_depth), the answer is still 400.
	$node->safe_psql('postgres', 'CREATE DATABASE limits;');
	$node->safe_psql('limits', $standin_sql);
	$node->safe_psql('limits', q{ALTER DATABASE limits SET max_stack_depth = '200kB';});
	my $drcv = start_receiver('deep', dbname => 'limits');
	$r = http($drcv->{base}, path => $hook, body => $deep);
	is($r->{code}, 400, 'stack depth exceeded in the database: 400, not 503');
	like($r->{body}, qr/^\{"error":"invalid payload","message":"stack depth limit exceeded"/,
		'stack depth exceeded: the answer gives the database\'s message');
	is(http($drcv->{base}, path => $hook, body => ticket_payload())->{code}, 200,
		'the same receiver stores a valid payload');
	is(stop_receiver($drcv), 0, 'deep receiver exited with status 0');
	like(slurp_file($drcv->{log}), qr{POST /webhooks/\*\*\* 400 .*sqlstate=54001}, 'the log shows SQLSTATE 54001');
}

# ------------------------------------------------------------------
# Slow clients: --timeout bounds a whole request, however it trickles in
# ------------------------------------------------------------------

# A client that sends the headers of a POST one line per second and never
# finishes them.
sub drip_open
{
	my ($port) = @_;
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or return undef;
	syswrite($sock, "POST $hook HTTP/1.1\r\nHost: x\r\n");
	return { sock => $sock, lines => 0, next => time + 1 };
}

# Send the next header line if one is due; returns false once the receiver
# has closed the connection.
sub drip_step
{
	my ($d) = @_;
	my $sel = IO::Select->new($d->{sock});
	if ($sel->can_read(0))
	{
		my $n = sysread($d->{sock}, my $buf, 4096);
		return 0 if !$n;
	}
	if (time >= $d->{next})
	{
		return 0 if !defined syswrite($d->{sock}, 'X-Drip-' . ++$d->{lines} . ": y\r\n");
		$d->{next} += 1;
	}
	return 1;
}

{
	local $SIG{PIPE} = 'IGNORE';

	# one client: cut off at --timeout, although it is never idle for long
	my $d = drip_open($lport);
	my $t0 = time;
	my $open = 1;
	while ($open && time - $t0 < 10)
	{
		$open = drip_step($d);
		sleep 0.05;
	}
	my $elapsed = time - $t0;
	ok(!$open, 'a client sending one header line per second is cut off');
	cmp_ok($elapsed, '>', 3.5, sprintf('not before --timeout 4 (%.1f s)', $elapsed));
	cmp_ok($elapsed, '<', 5.5, sprintf('soon after --timeout 4 (%.1f s)', $elapsed));
	close $d->{sock};

	# 40 such clients, reconnecting when cut off, against --max-connections 24:
	# a legitimate POST is still answered promptly
	my @drips = grep { defined } map { drip_open($lport) } 1 .. 40;
	my $opened = scalar @drips;
	my $legit;
	$t0 = time;
	while (time - $t0 < 20)
	{
		foreach my $i (0 .. $#drips)
		{
			next if drip_step($drips[$i]);
			close $drips[$i]{sock};
			$drips[$i] = $opened++ < 400 ? drip_open($lport) : undef;
		}
		@drips = grep { defined } @drips;
		if (!$legit && time - $t0 >= 1.5)
		{
			$legit = start_post($lbase . $hook, ticket_payload(),
				write_out => '%{http_code} %{time_total}', max_time => 15);
		}
		if ($legit)
		{
			$legit->{h}->pump_nb if $legit->{h}->pumpable;
			last if !$legit->{h}->pumpable;
		}
		sleep 0.05;
	}
	$legit->{h}->finish;
	close $_->{sock} foreach @drips;
	my ($code, $took) = split ' ', $legit->{out};
	is($code, '200', 'POST answered 200 while 40 slow clients keep connecting');
	cmp_ok($took // 99, '<', 3, sprintf('and promptly (%.2f s, --timeout 4)', $took // 99));
	$stored++;
	is(inbox_count(), $stored, 'the POST was stored, no slow one');
	my $log = slurp_file($lrcv->{log});
	like($log, qr{ /webhooks/\*\*\* - [\d.]+ms .*note=slow-request aborted=timeout}, 'a slow client cut off is logged as a timeout');
	like($log, qr{ /webhooks/\*\*\* - [\d.]+ms .*note=evicted aborted=timeout}, 'so are slow clients evicted for others');
}
is(stop_receiver($lrcv), 0, 'limits receiver exited with status 0');

# ------------------------------------------------------------------
# Bursts for a few resources: grouped transactions never deadlock, and a
# transaction chosen as a deadlock victim is retried, not answered 503
# ------------------------------------------------------------------
SKIP:
{
	skip 'the stand-in receive() takes no row locks', 10 if !$real_extension;

	my @hot = map { sprintf('00000000-0000-4000-8000-0000000000%02d', $_) } 0 .. 9;
	my @hot_files;
	foreach my $i (0 .. $#hot)
	{
		my $file = "$PostgreSQL::Test::Utils::tmp_check/hot_$i.json";
		append_to_file($file, ticket_payload($hot[$i]));
		push @hot_files, $file;
	}
	my $brcv = start_receiver('burst', '--db-connections' => 8, '--quiet');
	my $log_offset = -s $node->logfile;

	# 16 senders, 300 POSTs each over one keep-alive connection, resources
	# in random order
	my @senders;
	foreach my $s (1 .. 16)
	{
		my $cfg = "$PostgreSQL::Test::Utils::tmp_check/burst_$s.curlrc";
		my $text = '';
		foreach my $i (1 .. 300)
		{
			$text .= "next\n" if $i > 1;
			$text .= qq(url = "$brcv->{base}$hook"\n)
			  . qq(data-binary = "\@$hot_files[int(rand(@hot_files))]"\n)
			  . qq(header = "Content-Type: application/json"\n)
			  . qq(output = "/dev/null"\nwrite-out = "%{http_code}\\n"\nmax-time = 20\n);
		}
		append_to_file($cfg, $text);
		my %c = (out => '');
		$c{h} = IPC::Run::start([ 'curl', '-s', '-K', $cfg ], '<', '/dev/null', '>', \$c{out},
			IPC::Run::timeout(180));
		push @senders, \%c;
	}
	$_->{h}->finish foreach @senders;
	my %codes;
	$codes{$_}++ foreach map { split /\n/, $_->{out} } @senders;
	my $summary = join ', ', map { "$_: $codes{$_}" } sort keys %codes;
	is($codes{200} // 0, 4800, "4,800 POSTs for 10 resources from 16 senders all answered 200 ($summary)");
	ok(!$node->log_contains(qr/deadlock detected/, $log_offset), 'the server detected no deadlock');
	my $hot_list = join ', ', map { "'/v0/tickets/$_'" } @hot;
	is($node->safe_psql('postgres', "SELECT sum(notifications) FROM $inbox WHERE resource IN ($hot_list)"),
		4800, 'every notification was counted in');
	is(stop_receiver($brcv), 0, 'burst receiver exited with status 0');

	# A deadlock with another session: the receiver's transaction waits
	# first, so it is the victim; it must roll back, retry and answer 200.
	my $crcv = start_receiver('conflict', '--db-connections' => 1, '--query-timeout' => 15000);
	my @res = map { sprintf('00000000-0000-4000-8000-0000000000c%d', $_) } 0 .. 2;
	$node->safe_psql('postgres', join('', map { "SELECT sac_webhook.receive('" . ticket_payload($_) . "');" } @res));
	my $lock_row = sub {
		return "SELECT 1 FROM $inbox WHERE resource = '/v0/tickets/$_[0]' "
		  . "AND state IN ('pending', 'retrying') FOR UPDATE;";
	};
	my $receiver_waits =
	  "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'sac_webhook_receiver' "
	  . "AND wait_event_type = 'Lock'";
	my $s0 = lock_session($lock_row->($res[0]));
	my $s2 = lock_session($lock_row->($res[2]));
	$log_offset = -s $node->logfile;

	# one request waits for the first row; two more queue behind it and
	# are then stored together, the second row before the third
	my $c0 = start_post($crcv->{base} . $hook, ticket_payload($res[0]));
	ok($node->poll_query_until('postgres', $receiver_waits), 'the receiver waits for a locked row');
	my $c1 = start_post($crcv->{base} . $hook, ticket_payload($res[1]));
	wait_queued($crcv, 1);
	my $c2 = start_post($crcv->{base} . $hook, ticket_payload($res[2]));
	ok(wait_queued($crcv, 2), 'two more requests queue behind it');
	$s0->{in} .= "COMMIT; SELECT 'released';\n";
	pump_until($s0->{h}, IPC::Run::timer(30), \$s0->{out}, qr/released/);
	$c0->{h}->finish;
	$node->poll_query_until('postgres', $receiver_waits);

	# the group holds the second row and waits for the third: take the
	# second too, and the server has a deadlock to break
	$s2->{in} .= $lock_row->($res[1]) . "SELECT 'got it';\n";
	pump_until($s2->{h}, IPC::Run::timer(30), \$s2->{out}, qr/got it/);
	$s2->{in} .= "COMMIT;\n\\q\n";
	$s2->{h}->finish;
	$s0->{in} .= "\\q\n";
	$s0->{h}->finish;
	$_->{h}->finish foreach $c1, $c2;
	is("$c0->{out} $c1->{out} $c2->{out}", '200 200 200',
		'the deadlock victim was retried: all three answered 200');
	ok($node->log_contains(qr/deadlock detected/, $log_offset), 'there was a deadlock to retry');
	cmp_ok(metric($crcv->{base}, 'sac_webhook_receiver_db_conflict_retries_total') // 0,
		'>=', 1, 'the retry is counted');
	is(stop_receiver($crcv), 0, 'conflict receiver exited with status 0');
}

# ------------------------------------------------------------------
# Usage errors
# ------------------------------------------------------------------
{
	my ($out, $err) = ('', '');
	local $ENV{SAC_WEBHOOK_SECRET};
	delete $ENV{SAC_WEBHOOK_SECRET};
	IPC::Run::run([ $receiver_bin, '--listen', '127.0.0.1:1' ], '>', \$out, '2>', \$err);
	is($? >> 8, 2, 'no secret: usage error, exit status 2');
	like($err, qr/secret is required/, 'no secret: says so');

	IPC::Run::run([ $receiver_bin, '--help' ], '>', \$out, '2>', \$err);
	like($out, qr/--max-group.*SAC_WEBHOOK_MAX_GROUP/s, '--help documents options and environment');
}

$node->stop;
done_testing();
