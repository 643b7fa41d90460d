// Scratch: follower-backend CPU per row for different ways of applying the W1 rows.
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::try_join_all;
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::NoTls;

#[derive(Debug, Clone)]
struct P(Option<Bytes>, bool);
impl ToSql for P {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 { None => Ok(IsNull::Yes), Some(b) => { out.extend_from_slice(b); Ok(IsNull::No) } }
    }
    fn accepts(_: &Type) -> bool { true }
    fn encode_format(&self, _: &Type) -> Format { if self.1 { Format::Binary } else { Format::Text } }
    to_sql_checked!();
}

fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = &args[1];
    let variant = args[2].as_str();
    let n: usize = args.get(3).map_or(200_000, |s| s.parse().unwrap());
    let group: usize = args.get(4).map_or(4000, |s| s.parse().unwrap());
    let chunk: usize = args.get(5).map_or(256, |s| s.parse().unwrap());
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("TRUNCATE secrets; SET session_replication_role = replica; SET synchronous_commit = on").await.unwrap();
    client.execute("SELECT pg_replication_origin_create('ab') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname='ab')", &[]).await.unwrap();
    client.execute("SELECT pg_replication_origin_session_setup('ab')", &[]).await.unwrap();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let ids: Vec<String> = (0..1000).map(|i| format!("acme:variable:{}/app-{:04}/var-{:04}", if i % 2 == 0 { "shared" } else { "private" }, i / 100, i % 100)).collect();
    let value = vec![0x47u8; 61];
    let hex: String = format!("\\x{}", "47".repeat(61));
    let binary = variant.starts_with("bin");
    let row = |i: usize| -> [P; 4] {
        let ver = (i / 1000 + 2) as i32;
        [
            P(Some(Bytes::from(ids[i % 1000].clone())), false),
            if binary { P(Some(Bytes::copy_from_slice(&ver.to_be_bytes())), true) } else { P(Some(Bytes::from(ver.to_string())), false) },
            if binary { P(Some(Bytes::from(value.clone())), true) } else { P(Some(Bytes::from(hex.clone())), false) },
            P(None, false),
        ]
    };
    let conflict = !variant.contains("plain");
    let mut sql = String::from("INSERT INTO secrets (resource_id, version, value, expires_at) VALUES ");
    for r in 0..chunk {
        if r > 0 { sql.push_str(", "); }
        sql.push_str(&format!("(${}, ${}, ${}, ${})", r * 4 + 1, r * 4 + 2, r * 4 + 3, r * 4 + 4));
    }
    if conflict { sql.push_str(" ON CONFLICT (resource_id, version) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"); }
    let stmt = client.prepare(&sql).await.unwrap();
    let begin = client.prepare("BEGIN").await.unwrap();
    let commit = client.prepare("COMMIT").await.unwrap();
    let setup = client.prepare("SELECT pg_replication_origin_xact_setup($1::text::pg_lsn, now())").await.unwrap();
    let t0 = std::time::Instant::now();
    let c0 = cpu_ticks(pid);
    let mut i = 0;
    let mut g = 0u64;
    while i < n {
        let end = (i + group).min(n);
        if variant.starts_with("copy") {
            client.execute(&begin, &[]).await.unwrap();
            let sink = client.copy_in("COPY secrets (resource_id, version, value, expires_at) FROM STDIN").await.unwrap();
            let mut buf = BytesMut::new();
            for k in i..end {
                buf.put_slice(ids[k % 1000].as_bytes()); buf.put_u8(b'\t');
                buf.put_slice((k / 1000 + 2).to_string().as_bytes()); buf.put_u8(b'\t');
                buf.put_slice(b"\\\\x"); buf.put_slice("47".repeat(61).as_bytes()); buf.put_slice(b"\t\\N\n");
            }
            futures_util::pin_mut!(sink);
            use futures_util::SinkExt;
            sink.send(buf.freeze()).await.unwrap();
            sink.finish().await.unwrap();
        } else {
            let mut futs = Vec::new();
            let c = &client; let b = begin.clone(); futs.push(Box::pin(async move { c.execute_raw(&b, Vec::<P>::new()).await }) as std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + '_>>);
            let mut k = i;
            while k < end {
                let rows = chunk.min(end - k);
                let s = if rows == chunk { stmt.clone() } else {
                    // tail: single-row statements (simple)
                    client.prepare(&sql_rows(rows, conflict)).await.unwrap()
                };
                let params: Vec<P> = (k..k + rows).flat_map(|x| row(x)).collect();
                let c = &client; futs.push(Box::pin(async move { c.execute_raw(&s, params).await }));
                k += rows;
            }
            try_join_all(futs).await.unwrap();
        }
        g += 1;
        let lsn = format!("0/{:X}", g * 1000);
        client.execute(&setup, &[&lsn]).await.unwrap();
        client.execute(&commit, &[]).await.unwrap();
        i = end;
    }
    let ticks = cpu_ticks(pid) - c0;
    let count: i64 = client.query_one("SELECT count(*) FROM secrets", &[]).await.unwrap().get(0);
    println!("{variant}\trows={n}\tgroup={group}\tchunk={chunk}\tbackend_cpu_s={:.2}\tus_per_row={:.1}\twall_s={:.2}\tcount={count}",
        ticks as f64 / 100.0, ticks as f64 * 10_000.0 / n as f64, t0.elapsed().as_secs_f64());
}

fn sql_rows(rows: usize, conflict: bool) -> String {
    let mut sql = String::from("INSERT INTO secrets (resource_id, version, value, expires_at) VALUES ");
    for r in 0..rows {
        if r > 0 { sql.push_str(", "); }
        sql.push_str(&format!("(${}, ${}, ${}, ${})", r * 4 + 1, r * 4 + 2, r * 4 + 3, r * 4 + 4));
    }
    if conflict { sql.push_str(" ON CONFLICT (resource_id, version) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"); }
    sql
}
