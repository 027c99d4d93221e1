//! The chainable setters every backend's options type has.

/// Writes a backend options type's setters, one per field (each taking and
/// returning the options, `#[must_use]`), those of `optional` fields setting
/// `Some(value)`, and `validated()`: the options once their `validate()`
/// passed, to find a mistake before `connect` does.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(Debug, Default)]
/// pub struct MyBusConfig {
///     /// Prefix of every key.
///     pub namespace: String,
///     /// How long a publish may take.
///     pub publish_timeout: Duration,
///     /// Cap on the stream's length.
///     pub max_len: Option<usize>,
/// }
///
/// impl MyBusConfig {
///     /// Checks every value.
///     pub fn validate(&self) -> eventsource_core::Result<()> {
///         if self.namespace.is_empty() {
///             return Err(eventsource_core::Error::config("namespace must not be empty"));
///         }
///         Ok(())
///     }
/// }
///
/// eventsource_core::config_setters!(MyBusConfig {
///     namespace: impl Into<String>,
///     publish_timeout: Duration,
/// } optional {
///     max_len: usize,
/// });
///
/// let config = MyBusConfig::default().namespace("shop").max_len(100).validated()?;
/// assert_eq!(config.max_len, Some(100));
/// assert!(MyBusConfig::default().validated().is_err());
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[macro_export]
macro_rules! config_setters {
    ($config:ty {
        $($name:ident: $ty:ty),* $(,)?
    } $(optional { $($opt:ident: $opt_ty:ty),* $(,)? })?) => {
        /// Setters, each taking and returning the options (for building
        /// them in code), and [`validated`](Self::validated).
        impl $config {
            $(
                #[doc = concat!("Sets `", stringify!($name), "` (see the field).")]
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value.into();
                    self
                }
            )*
            $($(
                #[doc = concat!("Sets `", stringify!($opt), "` (see the field).")]
                #[must_use]
                pub fn $opt(mut self, value: $opt_ty) -> Self {
                    self.$opt = Some(value.into());
                    self
                }
            )*)?

            /// The options once [`validate`](Self::validate) passed: to
            /// find a mistake before `connect` does (which validates too).
            pub fn validated(self) -> $crate::Result<Self> {
                self.validate()?;
                Ok(self)
            }
        }
    };
}
