
# Copyright (c) sac_webhook authors

# Tests for sac_webhook_receiver, the HTTP program in front of
# sac_webhook.receive(): routing and secrets, body limits, answers only
# after commit, grouping under concurrency, database outages and
# reconnection, slow clients, HMAC signatures, graceful shutdown and the
# access log's discretion.
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

if ($real_extension)
{
	$node->safe_psql('postgres', 'CREATE EXTENSION sac_webhook;');
}
else
{
	note 'sac_webhook is not installed: using a stand-in receive()';
	$node->safe_psql(
		'postgres', q{
CREATE ROLE sac_webhook_receiver NOLOGIN;
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
});
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

# Start a receiver on a free port; returns a hash describing it.
sub start_receiver
{
	my ($name, @args) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "$PostgreSQL::Test::Utils::log_path/receiver_$name.log";
	my @cmd = (
		$receiver_bin,
		'--listen' => "127.0.0.1:$port",
		'--db' => $node->connstr('postgres') . ' user=rcv',
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

# A psql session that holds an exclusive lock on the inbox until released,
# so that receive() calls wait and requests stay in flight.
sub lock_inbox
{
	my %s = (in => '', out => '', err => '');
	$s{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', '-' ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err});
	$s{in} .= "BEGIN; LOCK TABLE $inbox; SELECT 'locked';\n";
	pump_until($s{h}, IPC::Run::timer(30), \$s{out}, qr/locked/)
	  or die "could not lock the inbox: $s{err}";
	return \%s;
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
	my ($url, $body) = @_;
	my $file = "$PostgreSQL::Test::Utils::tmp_check/body_" . ++$body_seq . '.json';
	append_to_file($file, $body);
	my %c = (out => '');
	$c{h} = IPC::Run::start(
		[   'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '30',
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
