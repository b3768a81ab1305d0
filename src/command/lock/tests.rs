use super::*;

#[test]
fn tokens_order_by_epoch_then_counter() {
    let a = FenceToken::new(1, (1 << 40) - 1).unwrap();
    let b = FenceToken::new(2, 1).unwrap();
    assert!(a < b);
    assert_eq!(b.get(), (2 << 40) + 1);
    assert_eq!((b.epoch(), b.counter()), (2, 1));
    assert_eq!(FenceToken::parse(b"2199023255553"), Some(b));
    assert_eq!(FenceToken::new(0, 0), None);
    assert_eq!(FenceToken::new(0, 1 << 40), None);
    assert_eq!(FenceToken::new(1 << 23, 1), None);
    assert_eq!(
        FenceToken::new((1 << 23) - 1, 1).map(|t| t.get() < i64::MAX as u64),
        Some(true)
    );
    for bad in [&b"0"[..], b"-5", b"x", b"", b"1099511627776"] {
        assert_eq!(FenceToken::parse(bad), None, "{bad:?}");
    }
    assert!(FenceToken::new(MAX_EPOCH, 1).is_some());
    assert_eq!(MAX_RECORDED_EPOCH * 2, MAX_EPOCH + 1);
}
