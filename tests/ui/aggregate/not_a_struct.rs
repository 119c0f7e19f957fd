use es_core::Aggregate;

#[derive(Aggregate)]
#[es(event = AccountEvent)]
enum Account {
    Open,
}

fn main() {}
